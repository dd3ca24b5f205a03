//! `features` (what this runtime supports, as JSON) and `spec` (a starting config.json).

use std::path::Path;

use super::Error;

pub fn features() -> String {
    let caps: Vec<String> = (0..64)
        .filter_map(crate::run::security::cap_name)
        .map(|n| format!("CAP_{n}"))
        .collect();
    let value = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "dev", "diratime", "dirsync", "exec", "lazytime", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
            "nosuid", "notmpcopyup", "private", "rbind", "relatime", "remount", "ro", "rprivate",
            "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid",
            "sync", "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": super::process::apparmor_enabled()},
            "selinux": {"enabled": super::process::selinux_enabled()}
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "rootpack-runtime"}
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Writes a starting `config.json` into `bundle`, refusing to replace one.
pub fn spec(bundle: &Path) -> Result<(), Error> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(Error::Other(format!("{}: already exists", path.display())));
    }
    let mut spec = oci_spec::runtime::Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true)).set_args(Some(vec!["sh".into()]));
    }
    spec.save(&path)
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}
