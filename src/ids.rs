//! User and group ids as `run --user`, `[config].user` and `[[run]].user` write them:
//! `UID[:GID]` or `NAME[:GROUP]`. Only the syntax; names are looked up in the image by
//! `run::user`.

/// One side of `USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(u32),
    Name(String),
}

impl Id {
    fn parse(s: &str) -> Option<Id> {
        if s.is_empty() {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().map(Id::Number);
        }
        // What useradd accepts, and nothing that could be a path or an option.
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b))
            && !s.starts_with('-');
        ok.then(|| Id::Name(s.to_string()))
    }
}

/// A parsed `--user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: Id,
    pub group: Option<Id>,
}

impl UserSpec {
    pub fn parse(s: &str) -> Option<UserSpec> {
        let (u, g) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        Some(UserSpec {
            user: Id::parse(u)?,
            group: g.map(Id::parse).map(|g| g.ok_or(())).transpose().ok()?,
        })
    }

    /// Numeric ids without a lookup: `UID` alone means `UID:UID`, as rootpack always had.
    pub fn numeric(&self) -> Option<(u32, u32)> {
        match (&self.user, &self.group) {
            (Id::Number(u), None) => Some((*u, *u)),
            (Id::Number(u), Some(Id::Number(g))) => Some((*u, *g)),
            _ => None,
        }
    }
}

/// A `--user` split into numeric ids, used as they are, or a spec whose names the image
/// must resolve; neither when absent or not a valid spec.
pub fn split_user(s: Option<&str>) -> (Option<(u32, u32)>, Option<UserSpec>) {
    match s.and_then(UserSpec::parse) {
        Some(spec) => match spec.numeric() {
            Some(ids) => (Some(ids), None),
            None => (None, Some(spec)),
        },
        None => (None, None),
    }
}

/// `UID[:GID]`, numeric; the gid defaults to the uid.
pub fn parse_uid_gid(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// When process `pid` started (field 22 of `/proc/PID/stat`, clock ticks since boot), so
/// that a recycled pid is not taken for it; `None` when it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}
