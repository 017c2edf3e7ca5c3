//! The packaging under `deploy/` stays true to the agent: the systemd unit
//! verifies, every flag the unit and the `DaemonSet` pass is one `run`
//! accepts, and every metric the Grafana dashboard queries is one the agent
//! exports. In the lab: reading the metrics loads the datapath (root).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> PathBuf {
    egress_lab::agent_binary()
}

/// `--flag` words in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '=' | '\\' | ',' | '[' | ']'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

#[test]
fn deployment_flags_are_flags_of_run() {
    let mut known = BTreeSet::new();
    for cmd in ["run", "status"] {
        let help = Command::new(bin()).args([cmd, "--help"]).output().expect("--help");
        known.extend(flags(&String::from_utf8_lossy(&help.stdout)));
    }
    for file in ["deploy/systemd/egress-agent.service", "deploy/kubernetes/egress-agent.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        let used = flags(&code);
        assert!(used.contains("--policy") && used.contains("--lan"), "{file}: {used:?}");
        for f in &used {
            assert!(
                known.contains(f),
                "{file} passes {f}, which neither `egress-agent run` nor `status` takes (they take {known:?})"
            );
        }
    }
    // Metrics on loopback only; liveness from the pins, not a scrape.
    let k8s = std::fs::read_to_string(root().join("deploy/kubernetes/egress-agent.yaml")).expect("manifest");
    assert!(k8s.contains("--metrics=127.0.0.1:"), "metrics on loopback");
    assert!(k8s.contains("command: [egress-agent, status, --pin-dir=/sys/fs/bpf/egress, --live]"), "liveness");
    assert!(!k8s.contains("httpGet"), "no probe a slow scrape can starve");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/egress-agent.service")).expect("unit");
    let dir = std::env::temp_dir().join(format!("egress-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("egress-agent.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/egress-agent", &bin().display().to_string())).expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output();
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(out) = out else {
        panic!("systemd-analyze is needed (cargo xtask setup installs systemd)");
    };
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let dp = egress_agent::datapath::Datapath::load().expect("datapath (run as root)");
    let stats = Arc::new(egress_agent::reporting::metrics::AgentStats::default());
    let reg = egress_agent::reporting::metrics::registry(Arc::new(Mutex::new(dp)), stats);
    let page = egress_agent::reporting::metrics::render(&reg).expect("metrics render");
    // Series names from the `# TYPE` lines (families without samples yet
    // are declared all the same).
    let mut exported = BTreeSet::new();
    for line in page.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        match kind {
            "counter" => exported.insert(format!("{name}_total")),
            "histogram" => ["_bucket", "_sum", "_count"].iter().all(|s| exported.insert(format!("{name}{s}"))),
            _ => exported.insert(name.to_string()),
        };
    }
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/egress-dashboard.json")).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queried = BTreeSet::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("egress_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        assert!(exported.contains(name), "the dashboard queries {name}, which the agent does not export:\n{page}");
    }
}
