//! `linux.seccomp` in the OCI form, as podman and containerd send it, compiled by our own
//! BPF compiler: the form is Docker's without its capability and kernel conditions.

use oci_spec::runtime::LinuxSeccomp;

use super::Error;
use crate::run::seccomp::{self, Filter, docker};

const KNOWN_FLAGS: &[&str] = &[];

pub fn filter(spec: &LinuxSeccomp) -> Result<Filter, Error> {
    let err = |e: String| Error::Other(format!("linux.seccomp: {e}"));
    if spec.listener_path().is_some() {
        return Err(err(
            "listenerPath (user notification) is not supported".into()
        ));
    }
    for flag in spec.flags().iter().flatten() {
        let name = format!("{flag:?}");
        if !KNOWN_FLAGS.contains(&name.as_str()) {
            return Err(err(format!("flag {name} is not supported")));
        }
    }
    let json = serde_json::to_string(spec).map_err(|e| err(e.to_string()))?;
    let mut profile = docker::parse(&json).map_err(err)?;
    let dropped = seccomp::drop_unknown(&mut profile);
    if !dropped.is_empty() {
        log::debug!(
            "linux.seccomp: calls unknown here, skipped: {}",
            dropped.join(" ")
        );
    }
    seccomp::compile_here(&profile).map_err(err)
}
