//! Help for recipe authors, kept apart from the schema: which key a TOML error is about and
//! what a valid value looks like, the `{latest}` placeholder, and whether a `[[binary]]` is
//! a program at all.

use std::cmp::Ordering;
use std::ops::Range;
use std::path::Path;

/// An example of a valid value for each recipe key (by its full dotted name).
const EXAMPLES: &[(&str, &str)] = &[
    ("name", "name = \"hello\""),
    ("source_date_epoch", "source_date_epoch = 1700000000"),
    (
        "mountpoints",
        "mountpoints = [\"/proc\", \"/sys\", \"/dev\"]",
    ),
    (
        "layer.initramfs",
        "initramfs = \"/boot/initrd.img-{latest}\"",
    ),
    ("layer.tar", "tar = \"rootfs.tar.zst\""),
    ("layer.dir", "dir = \"rootfs\""),
    ("binary.path", "path = \"/bin/bash\""),
    ("binary.to", "to = \"/usr/local/bin/tool\""),
    ("binary.links", "links = [\"/bin/sh\"]"),
    ("file.to", "to = \"/etc/motd\""),
    ("file.content", "content = \"hello\\n\""),
    ("file.from", "from = \"files/motd\""),
    ("file.mode", "mode = \"0644\""),
    ("file.uid", "uid = 0"),
    ("file.gid", "gid = 0"),
    ("dir.path", "path = \"/srv\""),
    ("dir.mode", "mode = \"0755\""),
    ("dir.uid", "uid = 0"),
    ("dir.gid", "gid = 0"),
    ("symlink.path", "path = \"/bin/sh\""),
    ("symlink.target", "target = \"bash\""),
    ("config.entrypoint", "entrypoint = [\"/bin/bash\"]"),
    ("config.cmd", "cmd = [\"-l\"]"),
    ("config.env", "env = { PATH = \"/usr/bin:/bin\" }"),
    ("config.workdir", "workdir = \"/\""),
    ("config.hostname", "hostname = \"hello\""),
    ("config.user", "user = \"1000:1000\" (or \"nobody\")"),
    ("limits.memory", "memory = \"256M\""),
    ("limits.cpus", "cpus = 1.0"),
    ("limits.pids", "pids = 256"),
    ("output.format", "format = \"ext4\""),
    ("output.size", "size = \"auto\""),
    ("output.free", "free = \"10%\""),
    ("output.package_files", "package_files = \"keep\""),
    ("output.method", "method = \"populate\""),
    ("output.label", "label = \"hello\""),
];

/// A TOML error message with the key it is about and an example of a valid value, when
/// the message is about a value (`invalid type: integer 256, expected a string`).
pub fn explain(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let Some(span) = span.filter(|_| message.starts_with("invalid")) else {
        return message.to_string();
    };
    let Some(key) = key_at(text, span.start) else {
        return message.to_string();
    };
    // Env values are strings whatever the variable.
    let lookup = if key.starts_with("config.env.") {
        "config.env"
    } else {
        &key
    };
    match EXAMPLES.iter().find(|(k, _)| *k == lookup) {
        Some((_, example)) => format!("{key}: {message} (for example: {example})"),
        None => format!("{key}: {message}"),
    }
}

/// The dotted name of the key whose value starts at `offset`: the table header above it,
/// then the keys on its line (`env = { PATH = …` gives `config.env.PATH`).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut keys: Vec<(usize, String)> = Vec::new();
    let (mut depth, mut token, mut quote) = (0usize, String::new(), None::<char>);
    for c in text[line_start..offset].chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{') => {
                depth += 1;
                token.clear();
            }
            (None, '}') => {
                depth = depth.saturating_sub(1);
                keys.retain(|(d, _)| *d <= depth);
            }
            (None, '=') => {
                let key = token.trim().trim_matches('"').to_string();
                keys.retain(|(d, _)| *d < depth);
                if !key.is_empty() {
                    keys.push((depth, key));
                }
                token.clear();
            }
            (None, ',' | '[') => token.clear(),
            (None, c) => token.push(c),
        }
    }
    if keys.is_empty() {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    });
    let mut parts: Vec<String> = table.into_iter().collect();
    parts.extend(keys.into_iter().map(|(_, k)| k));
    Some(parts.join("."))
}

/// Expands `{latest}` in the last component of `path` (relative to `dir`) to the newest
/// version present: `/boot/initrd.img-{latest}` is the `/boot/initrd.img-*` with the
/// highest version, whichever kernel is running (VMs and CI runners often boot one that
/// has no initrd in `/boot`).
pub fn expand_latest(dir: &Path, path: &str) -> Result<String, String> {
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
        None => (".", path),
    };
    let Some((prefix, suffix)) = name.split_once("{latest}") else {
        return Err(format!(
            "\"{path}\": {{latest}} goes in the file name, like /boot/initrd.img-{{latest}}"
        ));
    };
    let folder = dir.join(parent);
    let pattern = format!("{}/{prefix}*{suffix}", folder.display());
    let entries = std::fs::read_dir(&folder).map_err(|e| format!("{pattern}: {e}"))?;
    let newest = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (!middle.is_empty()).then(|| middle.to_string())
        })
        .max_by(|a, b| compare_versions(a, b));
    match newest {
        Some(v) => Ok(path.replacen("{latest}", &v, 1)),
        None => Err(format!(
            "\"{path}\": no {pattern} exists ({{latest}} is the newest version there)"
        )),
    }
}

/// Compares version strings as `sort -V` does, closely enough for kernel releases: runs
/// of digits by value, everything else by bytes.
fn compare_versions(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(&rb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len())
}

/// Why `path` is not a program `[[binary]]` can take, if it is not: missing, not a
/// regular file, or without any execute bit.
pub fn not_a_program(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) => Some(e.to_string()),
        Ok(m) if !m.is_file() => Some("not a regular file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!(
            "not executable (mode {:04o})",
            m.permissions().mode() & 0o7777
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_values() {
        let text = "name = \"x\"\n[limits]\nmemory = 256\n[config]\nenv = { A = \"x=y\", B = 1 }\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("256").as_deref(), Some("limits.memory"));
        assert_eq!(at("1 }").as_deref(), Some("config.env.B"));
        assert_eq!(at("\"x\"").as_deref(), Some("name"));
        let m = explain(
            text,
            text.find("256").map(|s| s..s + 3),
            "invalid type: integer `256`, expected a string",
        );
        assert!(
            m.starts_with("limits.memory: invalid type") && m.ends_with("memory = \"256M\")"),
            "{m}"
        );
    }

    #[test]
    fn latest_is_the_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.19.0-1-amd64"] {
            std::fs::write(dir.path().join(format!("initrd.img-{v}")), b"").unwrap();
        }
        std::fs::write(dir.path().join("vmlinuz-7.0.0"), b"").unwrap();
        assert_eq!(
            expand_latest(dir.path(), "./initrd.img-{latest}").unwrap(),
            "./initrd.img-6.1.0-10-amd64"
        );
        let e = expand_latest(dir.path(), "none/x-{latest}").unwrap_err();
        assert!(e.contains("none/x-*"), "{e}");
        assert_eq!(compare_versions("6.10", "6.9"), Ordering::Greater);
    }
}
