//! `cargo xtask demo`: the containment lab on real traffic.
//!
//! Builds three network namespaces (the `AgentCore` runtime subnet, the
//! gateway running `egress-agent` with the reference pack of
//! `policies/agentcore/`, an upstream "internet" with TLS servers and a
//! resolver; the workload's HTTPS client is curl), plays scenario cards,
//! each an attack a prompt-injected agent would try (mapped to the OWASP
//! Top 10 for LLM applications) or legitimate traffic that must keep
//! working, first in monitor mode, then with the pack promoted to enforce.
//! Prints the report and writes it as HTML. Cleans up on exit, failure and
//! Ctrl-C.
//!
//! Options: `--policy DIR` (default `policies/agentcore`), `--agent BIN`
//! (default `target/release/egress-agent`), `--report PATH` (default
//! `target/demo/containment-report.html`).

use std::path::PathBuf;
use std::process::ExitCode;

use egress_lab::{cleanup, containment, containment_report};

/// The workspace root (the lab crate is `tests/` in it).
fn root() -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    lab.parent().map_or(lab.clone(), std::path::Path::to_path_buf)
}

fn main() -> ExitCode {
    let mut policy = root().join("policies/agentcore");
    let mut agent = root().join("target/release/egress-agent");
    let mut report = root().join("target/demo/containment-report.html");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().map(PathBuf::from);
        match (a.as_str(), value) {
            ("--policy", Some(v)) => policy = v,
            ("--agent", Some(v)) => agent = v,
            ("--report", Some(v)) => report = v,
            (other, _) => {
                eprintln!("demo: unknown argument {other} (--policy DIR, --agent BIN, --report PATH)");
                return ExitCode::FAILURE;
            }
        }
    }
    cleanup::on_interrupt();
    println!("egress containment lab: an AI agent runtime attacked as a prompt-injected agent would\n");
    println!("  runtime subnet  10.10.1.0/24 (the agent at 10.10.1.10)");
    println!("  gateway         egress-agent enforcing {}", policy.display());
    println!(
        "  upstream        sanctioned model, AWS, tools and MCP servers; attacker hosts; approved resolver 198.51.100.53;"
    );
    println!("                  foreign resolver 198.51.100.99\n");
    let result = containment::run(&agent, &policy, |o| {
        let mark = if o.as_expected() { "✔" } else { "✘" };
        println!(
            "  {mark} {:<8} {:<58} {:<10} {}",
            o.mode,
            o.card.title,
            if o.delivered { "delivered" } else { "blocked" },
            o.verdict
        );
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo failed: {e}");
            cleanup::cleanup_now();
            return ExitCode::FAILURE;
        }
    };
    print!("{}", containment_report::text(&r));
    if let Some(dir) = report.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&report, containment_report::html(&r)) {
        Ok(()) => println!("\n  report: {}", report.display()),
        Err(e) => eprintln!("demo: writing {}: {e}", report.display()),
    }
    if r.all_as_expected() {
        println!("\nevery card behaved as the pack says, in monitor and in enforce mode.");
        ExitCode::SUCCESS
    } else {
        println!("\nsome cards did not behave as expected (✘).");
        ExitCode::FAILURE
    }
}
