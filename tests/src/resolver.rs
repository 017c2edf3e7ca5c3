//! A real resolver for labs: dnsmasq in the upstream namespace, answering
//! from a hosts file (A and AAAA), CNAMEs and wildcard addresses, and the
//! workload namespace pointed at it through `/etc/netns/NAME/resolv.conf`
//! (which `ip netns exec` mounts over `/etc/resolv.conf`).

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use super::cleanup;
use super::lab::Lab;

/// What the resolver answers.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// name → addresses (A and AAAA).
    pub hosts: Vec<(String, Vec<IpAddr>)>,
    /// alias → target (the target's addresses come from `hosts`).
    pub cnames: Vec<(String, String)>,
    /// domain → address for the domain and every name under it.
    pub wildcards: Vec<(String, IpAddr)>,
    /// TTL of every answer, seconds.
    pub ttl: u32,
}

/// dnsmasq running in the lab's upstream namespace; stopped on drop.
pub struct Resolver {
    child: Child,
    dir: PathBuf,
    resolv_dir: PathBuf,
}

impl Resolver {
    /// Starts dnsmasq on `listen` (upstream addresses; the first becomes the
    /// workload's resolver) with `zone`.
    pub fn start(lab: &Lab, listen: &[IpAddr], zone: &Zone) -> io::Result<Self> {
        let first = *listen.first().ok_or_else(|| io::Error::other("no listen address"))?;
        let dir = std::env::temp_dir().join(format!("egress-dns-{}", lab.upstream.name));
        std::fs::create_dir_all(&dir)?;
        let mut hosts = String::new();
        for (name, addrs) in &zone.hosts {
            for a in addrs {
                let _ = writeln!(hosts, "{a} {name}");
            }
        }
        std::fs::write(dir.join("hosts"), hosts)?;
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--no-daemon".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--bind-interfaces".to_string(),
            "--except-interface=lo".to_string(),
            format!("--addn-hosts={}", dir.join("hosts").display()),
            format!("--local-ttl={}", zone.ttl),
            format!("--pid-file={}", dir.join("pid").display()),
            "--user=root".to_string(),
            "--cache-size=0".to_string(),
        ];
        for a in listen {
            args.push(format!("--listen-address={a}"));
        }
        for (alias, target) in &zone.cnames {
            args.push(format!("--cname={alias},{target},{}", zone.ttl));
        }
        for (domain, addr) in &zone.wildcards {
            args.push(format!("--address=/{domain}/{addr}"));
        }
        let child = cleanup::unblocked("ip")
            .args(["netns", "exec", &lab.upstream.name, "dnsmasq"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        cleanup::register_pid(child.id());
        let resolv_dir = PathBuf::from(format!("/etc/netns/{}", lab.workload.name));
        let resolver = Resolver { child, dir, resolv_dir };
        resolver.use_nameserver(first)?;
        for a in listen {
            wait_listening(lab, *a)?;
        }
        Ok(resolver)
    }

    /// Points the workload's resolver configuration at `addr`.
    pub fn use_nameserver(&self, addr: IpAddr) -> io::Result<()> {
        self.use_nameserver_with(addr, "")
    }

    /// Points the workload's resolver configuration at `addr`, with more
    /// glibc `options` (`use-vc`: every lookup over TCP, A and AAAA in one
    /// segment).
    pub fn use_nameserver_with(&self, addr: IpAddr, options: &str) -> io::Result<()> {
        std::fs::create_dir_all(&self.resolv_dir)?;
        std::fs::write(
            self.resolv_dir.join("resolv.conf"),
            format!("nameserver {addr}\noptions timeout:1 attempts:1 {options}\n"),
        )
    }
}

/// Waits until dnsmasq has a UDP socket on port 53 for `listen`'s
/// family in the upstream namespace (read from the socket table, not by
/// binding the port, which could make dnsmasq's own bind fail).
fn wait_listening(lab: &Lab, listen: IpAddr) -> io::Result<()> {
    let table = if listen.is_ipv4() { "udp" } else { "udp6" };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let ns = lab.upstream.name.clone();
        let up = super::netns::within(&ns, move || -> io::Result<bool> {
            // thread-self: this thread is the one moved into the namespace.
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{table}"))?;
            Ok(text.lines().skip(1).any(|l| l.split_whitespace().nth(1).is_some_and(|local| local.ends_with(":0035"))))
        })??;
        if up {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(io::Error::other("dnsmasq did not start listening"))
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        cleanup::forget_pid(self.child.id());
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
    }
}
