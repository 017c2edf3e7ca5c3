//! Real TLS for labs: a self-signed certificate (`openssl req`), TLS
//! servers (`openssl s_server -www`) in a namespace, and a real client
//! (curl) run from another.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cleanup;
use super::netns::{Netns, within};

/// A self-signed certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificate {
    /// Makes a self-signed P-256 certificate for `name`, valid one day, as
    /// `cert.pem` and `key.pem` in `dir` (which must exist). curl skips
    /// verification (what is tested is the name it sends); the rustls load
    /// client ([`super::tls_load`]) trusts it as its only root.
    pub fn self_signed(dir: &Path, name: &str) -> io::Result<Self> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")])
            // Its own trust anchor for clients that verify (rustls): not a CA.
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!("openssl req: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(Certificate { cert, key })
    }
}

/// `openssl s_server -quiet -www` on port 443 of one address: it answers
/// every HTTPS request with a status page, one connection at a time (a
/// connection the gateway reset on the client's side only would hold it;
/// with the TC hook the gateway resets the server's side too). Killed on
/// drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the server in namespace `ns` on `addr`:443 with `cert`. It
    /// may not accept yet: see [`wait_accepting`].
    pub fn start(ns: &Netns, addr: IpAddr, cert: &Certificate) -> io::Result<Self> {
        let addr = SocketAddr::new(addr, 443);
        let child = cleanup::unblocked("ip")
            .args(["netns", "exec", &ns.name, "openssl", "s_server", "-quiet", "-www"])
            .arg("-accept")
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        cleanup::register_pid(child.id());
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup::forget_pid(self.child.id());
    }
}

/// Waits until every server in `servers` accepts a TCP connection from
/// namespace `from`, all within `timeout`.
pub fn wait_accepting(servers: &mut [Server], from: &Netns, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    for server in servers {
        let to = server.addr;
        while within(&from.name, move || TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_err())? {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("TLS server on {to} exited ({status})")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("TLS server on {to} did not start within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// curl from namespace `ns`: `curl -sk -o /dev/null --max-time MAX ARGS`
/// (no certificate check, the body thrown away). Its exit code (-1 when a
/// signal ended it; 0 when the request got its answer) and how long it
/// took.
pub fn curl(ns: &Netns, max_time: Duration, args: &[&str]) -> io::Result<(i32, Duration)> {
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-sk", "-o", "/dev/null", "--max-time"])
        .arg(max_time.as_secs_f64().to_string())
        .args(args)
        .output()?;
    Ok((out.status.code().unwrap_or(-1), t.elapsed()))
}

/// curl's `--resolve` argument that sends `name` on port 443 to `addr`.
pub fn resolve(name: &str, addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{name}:443:{a}"),
        IpAddr::V6(a) => format!("{name}:443:[{a}]"),
    }
}
