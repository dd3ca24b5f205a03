//! `--user` as Docker takes it: `UID[:GID]` or `NAME[:GROUP]` (and mixes of the two), the
//! names looked up in the image's own `/etc/passwd` and `/etc/group`, never the host's.

pub use crate::ids::{Id, UserSpec};

/// A user resolved in the image: ids and home folder (if the image names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

impl UserSpec {
    /// Resolves the names against the text of the image's `/etc/passwd` and `/etc/group`.
    /// A name's primary group comes from its passwd line, as `docker run -u NAME` does.
    pub fn resolve(&self, passwd: &str, group: &str) -> Result<Resolved, String> {
        let entry = |text: &'_ str, name: &str| -> Option<Vec<String>> {
            text.lines()
                .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
                .find(|f| f.first().map(String::as_str) == Some(name))
        };
        let (uid, primary, home) = match &self.user {
            Id::Number(u) => {
                let line = passwd
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.get(2).and_then(|n| n.parse().ok()) == Some(*u));
                (*u, None, line.and_then(|f| f.get(5).map(|h| h.to_string())))
            }
            Id::Name(n) => {
                let f = entry(passwd, n)
                    .ok_or_else(|| format!("user {n:?} is not in the image's /etc/passwd"))?;
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
                let uid = num(2).ok_or_else(|| format!("user {n:?}: bad /etc/passwd line"))?;
                (uid, num(3), f.get(5).cloned())
            }
        };
        let gid = match &self.group {
            Some(Id::Number(g)) => *g,
            Some(Id::Name(n)) => entry(group, n)
                .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                .ok_or_else(|| format!("group {n:?} is not in the image's /etc/group"))?,
            // A bare UID keeps rootpack's old meaning, UID:UID, unless passwd says more.
            None => primary.unwrap_or(match self.user {
                Id::Number(u) => u,
                Id::Name(_) => 0,
            }),
        };
        Ok(Resolved {
            uid,
            gid,
            home: home.filter(|h| h.starts_with('/')),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100:Bob:/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nwheel:x:10:bob\n";

    fn resolve(s: &str) -> Result<(u32, u32), String> {
        UserSpec::parse(s)
            .unwrap()
            .resolve(PASSWD, GROUP)
            .map(|r| (r.uid, r.gid))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(resolve("bob"), Ok((1000, 100)));
        assert_eq!(resolve("bob:wheel"), Ok((1000, 10)));
        assert_eq!(resolve("bob:7"), Ok((1000, 7)));
        assert_eq!(resolve("0:wheel"), Ok((0, 10)));
        assert_eq!(resolve("1234"), Ok((1234, 1234)));
        assert!(resolve("alice").unwrap_err().contains("/etc/passwd"));
        assert!(resolve("bob:staff").unwrap_err().contains("/etc/group"));
        let home = UserSpec::parse("bob").unwrap().resolve(PASSWD, GROUP);
        assert_eq!(home.unwrap().home.as_deref(), Some("/home/bob"));
    }

    #[test]
    fn syntax() {
        assert!(UserSpec::parse("").is_none());
        assert!(UserSpec::parse("a:").is_none());
        assert!(UserSpec::parse("a:b:c").is_none());
        assert!(UserSpec::parse("../x").is_none());
        assert!(UserSpec::parse("99999999999").is_none());
        assert_eq!(UserSpec::parse("5:6").unwrap().numeric(), Some((5, 6)));
        assert_eq!(UserSpec::parse("root").unwrap().numeric(), None);
    }
}
