//! The real `egress-agent` binary running in a lab's gateway namespace.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cleanup;
use super::lab::Lab;
use super::netns::within;

/// Where the agent serves metrics inside the gateway namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9464";

/// A running agent; stopped with SIGTERM on drop.
pub struct AgentProcess {
    child: Child,
    gateway: String,
    pub flow_log: PathBuf,
    dir: PathBuf,
    banner: String,
}

impl AgentProcess {
    /// Starts `binary run --policy POLICY --lan lan0` in the lab's gateway
    /// with metrics and a flow log, and waits until it enforces.
    pub fn start(lab: &Lab, binary: &Path, policy_yaml: &str) -> io::Result<Self> {
        Self::start_with(lab, binary, policy_yaml, &[])
    }

    /// [`AgentProcess::start`] with extra `run` arguments (e.g. `--pin-dir`).
    pub fn start_with(lab: &Lab, binary: &Path, policy_yaml: &str, extra: &[&str]) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("egress-lab-{}", lab.gateway.name));
        std::fs::create_dir_all(&dir)?;
        let policy = dir.join("pack.yaml");
        std::fs::write(&policy, policy_yaml)?;
        Self::start_at(lab, binary, &policy, extra)
    }

    /// Starts the agent on a policy file or directory the caller manages.
    pub fn start_at(lab: &Lab, binary: &Path, policy: &Path, extra: &[&str]) -> io::Result<Self> {
        Self::start_wrapped(lab, &[], binary, policy, extra)
    }

    /// [`AgentProcess::start_at`] through a wrapper command (e.g. `setpriv`
    /// with fewer capabilities) that then executes the agent.
    pub fn start_wrapped(
        lab: &Lab,
        wrapper: &[&str],
        binary: &Path,
        policy: &Path,
        extra: &[&str],
    ) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("egress-lab-{}", lab.gateway.name));
        std::fs::create_dir_all(&dir)?;
        let flow_log = dir.join("flows.jsonl");
        let _ = std::fs::remove_file(&flow_log);
        let mut child = cleanup::unblocked("ip")
            .args(["netns", "exec", &lab.gateway.name])
            .args(wrapper)
            .arg(binary)
            .arg("run")
            .arg("--policy")
            .arg(policy)
            .args(["--lan", "lan0", "--metrics", METRICS_ADDR, "--flow-log"])
            .arg(&flow_log)
            .args(extra)
            .stdout(Stdio::piped())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .spawn()?;
        cleanup::register_pid(child.id());
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut agent = AgentProcess { child, gateway: lab.gateway.name.clone(), flow_log, dir, banner: String::new() };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("enforcing") => {
                agent.banner = line;
                Ok(agent)
            }
            Ok(line) => Err(io::Error::other(format!("agent said: {line}"))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the agent exited before enforcing (its error is on stderr)"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::other("agent did not start enforcing within 30 s")),
        }
    }

    /// Kills the agent with SIGKILL (a crash) and reaps it.
    pub fn kill(mut self) -> io::Result<()> {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait()?;
        cleanup::forget_pid(self.child.id());
        let _ = std::fs::remove_dir_all(&self.dir);
        std::mem::forget(self);
        Ok(())
    }

    /// The first line the agent printed (its "enforcing" line).
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// Stops the agent with SIGTERM and returns its exit code.
    pub fn stop(mut self) -> io::Result<Option<i32>> {
        self.signal_term();
        let code = self.child.wait()?.code();
        cleanup::forget_pid(self.child.id());
        Ok(code)
    }

    fn signal_term(&self) {
        // SAFETY: kill(2) on our child (`ip netns exec` execs the agent).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Sends SIGHUP: the agent reloads its policy.
    pub fn hup(&self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// The agent's resident memory, from /proc, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every flow-log record written so far.
    pub fn flow_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.flow_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first record satisfying `want`, waiting up to `timeout`.
    pub fn wait_record(
        &self,
        timeout: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.flow_records().into_iter().find(|v| want(v)) {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Policy reloads installed so far (`egress_policy_reloads_total{outcome="success"}`).
    pub fn reloads(&self) -> io::Result<u64> {
        Ok(metric(&self.metrics()?, "egress_policy_reloads_total{outcome=\"success\"}"))
    }

    /// The metrics page, fetched from inside the gateway namespace.
    pub fn metrics(&self) -> io::Result<String> {
        within(&self.gateway, || -> io::Result<String> {
            let mut s = TcpStream::connect(METRICS_ADDR)?;
            // A wedged agent fails the test instead of hanging it.
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: egress\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?
    }
}

/// Writes `text` to `path` as editors do: a temporary file renamed over it,
/// so that a reader never sees half a file.
pub fn write_and_rename(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The value of one series (`name{labels}`) in a metrics page, 0 if absent.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.signal_term();
        // A stop takes well under a second; a wedged agent is killed rather
        // than holding the test run.
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup::forget_pid(self.child.id());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
