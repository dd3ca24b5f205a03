//! A folder image, `OUT/NAME`: the staging tree itself, swapped into place. It has no
//! digest (nothing reads it as one file).

use std::path::Path;

use super::swap_into_place;
use crate::builder::{BuildError, Job, Written};

pub(in crate::builder) fn write(job: &Job<'_>, tree: &Path) -> Result<Written, BuildError> {
    swap_into_place(tree, job.image, job.work)?;
    Ok(Written::default())
}
