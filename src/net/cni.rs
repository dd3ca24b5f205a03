//! The CNI plugins, driven as libcni does (the CNI specification 1.0): a network list's
//! plugins run in order for ADD, each given the previous one's result, and in reverse
//! order for DEL, each given the result ADD ended with; `runtimeConfig` carries the
//! capabilities a plugin asks for (`portMappings`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};

/// Where distributions put the plugins: Debian's package, the upstream tarball, Fedora.
const PLUGIN_DIRS: [&str; 3] = ["/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"];

/// Where a user's own networks are looked up by name, rootpack's folder first.
pub const CONFIG_DIRS: [&str; 2] = ["/etc/rootpack/net.d", "/etc/cni/net.d"];

/// A network list: its name, CNI version and plugin configurations.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// A `.conflist`, or a `.conf` of one plugin.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, String> {
        let bad = |why: String| format!("{}: {why}", origin.display());
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let name = match top.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(bad("no \"name\"".into())),
        };
        let version = match top.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            _ => "0.4.0".into(),
        };
        let plugins = match top.remove("plugins") {
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|p| match p {
                    Value::Object(p) => Ok(p),
                    _ => Err(bad("a plugin is not a JSON object".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            None => vec![top],
        };
        if plugins.is_empty() {
            return Err(bad("no plugins".into()));
        }
        for p in &plugins {
            if !matches!(p.get("type"), Some(Value::String(t)) if is_plugin_name(t)) {
                return Err(bad("a plugin without a valid \"type\"".into()));
            }
        }
        Ok(NetworkList {
            name,
            version,
            plugins,
        })
    }

    /// The network list named `name` in [`CONFIG_DIRS`]: a file `NAME.conflist` (or
    /// `.conf`), or any list whose `"name"` is `name`.
    pub fn find(name: &str) -> Result<Self, String> {
        for dir in CONFIG_DIRS {
            for ext in ["conflist", "conf"] {
                let path = Path::new(dir).join(format!("{name}.{ext}"));
                if let Ok(text) = std::fs::read_to_string(&path) {
                    return Self::parse(&text, &path);
                }
            }
        }
        for dir in CONFIG_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                let ext = path.extension().and_then(|e| e.to_str());
                if !matches!(ext, Some("conflist" | "conf" | "json")) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                if let Ok(list) = Self::parse(&text, &path)
                    && list.name == name
                {
                    return Ok(list);
                }
            }
        }
        Err(format!(
            "no network {name:?}: none in {} (or use --network private)",
            CONFIG_DIRS.join(" or ")
        ))
    }

    pub fn to_json(&self) -> Value {
        json!({"cniVersion": self.version, "name": self.name, "plugins": self.plugins})
    }

    /// Back from [`NetworkList::to_json`].
    pub fn from_json(value: &Value) -> Result<Self, String> {
        Self::parse(&value.to_string(), Path::new("the attachment's record"))
    }
}

fn is_plugin_name(t: &str) -> bool {
    !t.is_empty() && !t.contains('/') && t != "." && t != ".."
}

/// The container side of one attachment.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub container_id: &'a str,
    /// The network namespace; `None` for a DEL after it is gone.
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `runtimeConfig` entries, given to the plugins whose capabilities name them.
    pub runtime: &'a Map<String, Value>,
}

/// The folder holding the plugins, or one line naming the package that brings them.
pub fn plugin_dir() -> Result<PathBuf, String> {
    PLUGIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").exists())
        .ok_or_else(|| {
            format!(
                "the CNI plugins are not installed (none in {}): install \
                 containernetworking-plugins",
                PLUGIN_DIRS.join(", ")
            )
        })
}

/// ADD: each plugin in turn, each result handed to `record` as it comes; the last one's.
pub fn add(
    list: &NetworkList,
    target: &Target<'_>,
    mut record: impl FnMut(&Value) -> Result<(), String>,
) -> Result<Value, String> {
    let dir = plugin_dir()?;
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        let config = plugin_config(list, plugin, target, prev.as_ref());
        let result = exec(&dir, plugin, "ADD", target, &config)?;
        record(&result)?;
        prev = Some(result);
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// DEL: each plugin in reverse, all of them even when one fails (the first failure is
/// returned), so that as much as can go goes.
pub fn del(list: &NetworkList, target: &Target<'_>, result: Option<&Value>) -> Result<(), String> {
    let dir = plugin_dir()?;
    let mut first_error = None;
    for plugin in list.plugins.iter().rev() {
        let config = plugin_config(list, plugin, target, result);
        if let Err(e) = exec(&dir, plugin, "DEL", target, &config) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A plugin's stdin: its configuration with the list's name and version, the previous
/// result, and the runtime's values for the capabilities it declares.
fn plugin_config(
    list: &NetworkList,
    plugin: &Map<String, Value>,
    target: &Target<'_>,
    prev: Option<&Value>,
) -> Value {
    let mut config = plugin.clone();
    config.insert("name".into(), Value::String(list.name.clone()));
    config.insert("cniVersion".into(), Value::String(list.version.clone()));
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        config.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(caps)) = plugin.get("capabilities") {
        for (cap, on) in caps {
            if on == &Value::Bool(true)
                && let Some(v) = target.runtime.get(cap)
            {
                runtime.insert(cap.clone(), v.clone());
            }
        }
    }
    if !runtime.is_empty() {
        config.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(config)
}

fn exec(
    dir: &Path,
    plugin: &Map<String, Value>,
    command: &str,
    target: &Target<'_>,
    config: &Value,
) -> Result<Value, String> {
    let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("");
    let program = dir.join(kind);
    let netns = target.netns.map(|p| p.as_os_str().to_owned());
    let mut child = Command::new(&program)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", target.container_id)
        .env("CNI_NETNS", netns.unwrap_or_default())
        .env("CNI_IFNAME", target.ifname)
        .env("CNI_PATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "CNI plugin {}: {e} (is containernetworking-plugins installed?)",
                program.display()
            )
        })?;
    let stdin = config.to_string();
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("CNI plugin {kind}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "CNI plugin {kind} ({command} on network {}): {}",
            config["name"].as_str().unwrap_or(""),
            plugin_error(&out.stdout, &out.stderr)
        ));
    }
    if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("CNI plugin {kind}: its result is not JSON: {e}"))
}

/// The plugin's error object (`msg`, `details`) on one line, else its stderr.
fn plugin_error(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        let msg = v["msg"].as_str().unwrap_or("");
        let details = v["details"].as_str().unwrap_or("");
        let text = match (msg, details) {
            ("", d) => d.to_string(),
            (m, "") => m.to_string(),
            (m, d) => format!("{m}: {d}"),
        };
        if !text.is_empty() {
            return text.replace('\n', " ");
        }
    }
    let err = String::from_utf8_lossy(stderr);
    let line = err.trim().replace('\n', "; ");
    if line.is_empty() {
        "failed without a message".into()
    } else {
        line
    }
}

/// The first IPv4 (else any) address of a result, and its gateway.
pub fn address(result: &Value) -> (Option<std::net::IpAddr>, Option<std::net::IpAddr>) {
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    let parse = |v: &Value, key: &str| -> Option<std::net::IpAddr> {
        let text = v[key].as_str()?;
        text.split('/').next()?.parse().ok()
    };
    let pick = ips
        .iter()
        .find(|ip| parse(ip, "address").is_some_and(|a| a.is_ipv4()))
        .or(ips.first());
    match pick {
        Some(ip) => (parse(ip, "address"), parse(ip, "gateway")),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_plugins_parse() {
        let list = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 2);
        let one = NetworkList::parse(r#"{"name":"m","type":"ptp"}"#, Path::new("y")).unwrap();
        assert_eq!((one.plugins.len(), one.version.as_str()), (1, "0.4.0"));
        let bad = NetworkList::parse(r#"{"name":"m","type":"../x"}"#, Path::new("z"));
        assert!(bad.unwrap_err().contains("valid \"type\""));
    }

    #[test]
    fn capabilities_select_runtime_config() {
        let list = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("x"),
        )
        .unwrap();
        let mut runtime = Map::new();
        runtime.insert("portMappings".into(), json!([{"hostPort": 1}]));
        let target = Target {
            container_id: "c",
            netns: None,
            ifname: "eth0",
            runtime: &runtime,
        };
        let prev = json!({"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]});
        let bridge = plugin_config(&list, &list.plugins[0], &target, None);
        assert!(bridge.get("runtimeConfig").is_none() && bridge.get("prevResult").is_none());
        let portmap = plugin_config(&list, &list.plugins[1], &target, Some(&prev));
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert_eq!(portmap["name"], "n");
        let (ip, gw) = address(&prev);
        assert_eq!(
            (ip.unwrap().to_string(), gw.unwrap().to_string()),
            ("10.0.0.2".into(), "10.0.0.1".into())
        );
    }
}
