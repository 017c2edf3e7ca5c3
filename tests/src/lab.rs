//! The containment lab: three network namespaces on one machine.
//!
//! ```text
//!  workload ──wl0══lan0── gateway (agent) ──wan0══up0── upstream
//!  10.10.1.10            10.10.1.1 | 192.0.2.1          192.0.2.2 + servers
//!  fd00:10:1::10         fd00:10:1::1 | 2001:db8:ffff::1
//! ```
//! The upstream namespace holds every "internet" address the scenarios use
//! (web servers, resolvers, model endpoints) and routes the workload subnet
//! back through the gateway; the gateway forwards without NAT.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::netns::{Netns, exec, within};

/// Workload addresses.
pub const WORKLOAD_V4: &str = "10.10.1.10";
pub const WORKLOAD_V6: &str = "fd00:10:1::10";
/// A second workload (a neighbour) on the same subnet.
pub const NEIGHBOUR_V4: &str = "10.10.1.11";
/// The gateway's LAN addresses.
pub const GATEWAY_V4: &str = "10.10.1.1";
pub const GATEWAY_V6: &str = "fd00:10:1::1";

/// Numbers the labs of this process, so that concurrent tests get namespaces of their own.
static NEXT_LAB_ID: AtomicU32 = AtomicU32::new(0);

/// A running lab; every namespace is deleted on drop.
pub struct Lab {
    pub workload: Netns,
    pub gateway: Netns,
    pub upstream: Netns,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Lab {
    /// Builds the lab. `upstream_addrs` are extra host addresses (IPv4 or
    /// IPv6) the upstream namespace answers on.
    pub fn new(upstream_addrs: &[&str]) -> io::Result<Self> {
        let id = format!("{}-{}", std::process::id(), NEXT_LAB_ID.fetch_add(1, Ordering::Relaxed));
        let workload = Netns::new(&format!("egwl-{id}"))?;
        let gateway = Netns::new(&format!("eggw-{id}"))?;
        let upstream = Netns::new(&format!("egup-{id}"))?;
        let lab = Lab { workload, gateway, upstream };
        lab.wire(upstream_addrs)?;
        lab.wait_ready()?;
        Ok(lab)
    }

    fn wire(&self, upstream_addrs: &[&str]) -> io::Result<()> {
        let (wl, gw, up) = (&self.workload, &self.gateway, &self.upstream);
        super::netns::ip(&[
            "link", "add", "wl0", "netns", &wl.name, "type", "veth", "peer", "name", "lan0", "netns", &gw.name,
        ])?;
        super::netns::ip(&[
            "link", "add", "wan0", "netns", &gw.name, "type", "veth", "peer", "name", "up0", "netns", &up.name,
        ])?;
        for (ns, dev) in [(wl, "wl0"), (gw, "lan0"), (gw, "wan0"), (up, "up0")] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        wl.ip(&["addr", "add", &format!("{WORKLOAD_V4}/24"), "dev", "wl0"])?;
        wl.ip(&["addr", "add", &format!("{NEIGHBOUR_V4}/24"), "dev", "wl0"])?;
        wl.ip(&["addr", "add", &format!("{WORKLOAD_V6}/64"), "dev", "wl0", "nodad"])?;
        wl.ip(&["route", "add", "default", "via", GATEWAY_V4])?;
        wl.ip(&["-6", "route", "add", "default", "via", GATEWAY_V6])?;
        gw.ip(&["addr", "add", &format!("{GATEWAY_V4}/24"), "dev", "lan0"])?;
        gw.ip(&["addr", "add", &format!("{GATEWAY_V6}/64"), "dev", "lan0", "nodad"])?;
        gw.ip(&["addr", "add", "192.0.2.1/24", "dev", "wan0"])?;
        gw.ip(&["addr", "add", "2001:db8:ffff::1/64", "dev", "wan0", "nodad"])?;
        gw.ip(&["route", "add", "default", "via", "192.0.2.2"])?;
        gw.ip(&["-6", "route", "add", "default", "via", "2001:db8:ffff::2"])?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        up.ip(&["addr", "add", "192.0.2.2/24", "dev", "up0"])?;
        up.ip(&["addr", "add", "2001:db8:ffff::2/64", "dev", "up0", "nodad"])?;
        for a in upstream_addrs {
            let ip: IpAddr = a.parse().map_err(io_err)?;
            let cidr = if ip.is_ipv4() { format!("{a}/32") } else { format!("{a}/128") };
            let mut args = vec!["addr", "add", cidr.as_str(), "dev", "up0"];
            if ip.is_ipv6() {
                args.push("nodad");
            }
            up.ip(&args)?;
        }
        up.ip(&["route", "add", "10.10.1.0/24", "via", "192.0.2.1"])?;
        up.ip(&["-6", "route", "add", "fd00:10:1::/64", "via", "2001:db8:ffff::1"])?;
        Ok(())
    }

    /// Waits until the workload reaches the upstream over both families.
    fn wait_ready(&self) -> io::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for target in ["192.0.2.2", "2001:db8:ffff::2"] {
            while !self.ping(target.parse().map_err(io_err)?)? {
                if std::time::Instant::now() > deadline {
                    return Err(io_err(format!("lab: {target} unreachable from the workload")));
                }
            }
        }
        Ok(())
    }

    /// Makes the upstream answer on every address of `v4` and `v6` (local
    /// routes: "any IP"), so that tests can hand out thousands of distinct
    /// destination addresses.
    pub fn any_ip(&self, v4: &str, v6: &str) -> io::Result<()> {
        self.upstream.ip(&["route", "add", "local", v4, "dev", "lo"])?;
        self.upstream.ip(&["-6", "route", "add", "local", v6, "dev", "lo"])
    }

    /// Starts a TCP echo server in the upstream namespace (runs until exit).
    pub fn tcp_echo(&self, addr: SocketAddr) -> io::Result<()> {
        self.tcp_echo_in(&self.upstream, addr)
    }

    /// Starts a TCP echo server in namespace `ns` (runs until exit): the
    /// gateway's own services, say.
    pub fn tcp_echo_in(&self, ns: &Netns, addr: SocketAddr) -> io::Result<()> {
        let listener = within(&ns.name, move || TcpListener::bind(addr))??;
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(())
    }

    /// Starts a UDP echo server in the upstream namespace (runs until exit).
    pub fn udp_echo(&self, addr: SocketAddr) -> io::Result<()> {
        let sock = within(&self.upstream.name, move || UdpSocket::bind(addr))??;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], peer);
            }
        });
        Ok(())
    }

    /// From the workload (source `src`, or the default address): connects
    /// over TCP, sends a line and expects it back. `Ok(false)` when the
    /// connection or the echo did not get through within `timeout`.
    pub fn tcp_exchange(&self, src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> io::Result<bool> {
        tcp_exchange_in(&self.workload, src, dst, timeout)
    }

    /// Like [`Lab::tcp_exchange`], as a TLS client's connection to `name`
    /// starts: the first message is a ClientHello naming `name` (which the
    /// echo server sends back whole). `Ok(false)` when the connection or
    /// the echo did not get through within `timeout` (a reset included).
    pub fn tls_exchange(
        &self,
        src: Option<IpAddr>,
        dst: SocketAddr,
        name: &str,
        timeout: Duration,
    ) -> io::Result<bool> {
        let hello = crate::hello::client_hello(name, 0);
        within(&self.workload.name, move || -> io::Result<bool> {
            let sock = connect_from(src, dst, timeout);
            let Ok(mut conn) = sock else { return Ok(false) };
            conn.set_read_timeout(Some(timeout))?;
            if conn.write_all(&hello).is_err() {
                return Ok(false);
            }
            let mut buf = vec![0u8; hello.len()];
            Ok(conn.read_exact(&mut buf).is_ok() && buf == hello)
        })?
    }

    /// Repeats [`Lab::tcp_exchange`] from the default address until its
    /// outcome is `want` or `deadline` has passed (for changes that take
    /// effect shortly after the call that made them: a reload, a detach);
    /// whether it became so.
    pub fn exchange_becomes(&self, dst: SocketAddr, want: bool, deadline: Duration) -> io::Result<bool> {
        let until = std::time::Instant::now() + deadline;
        loop {
            if self.tcp_exchange(None, dst, Duration::from_millis(1200))? == want {
                return Ok(true);
            }
            if std::time::Instant::now() > until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// From the workload: sends a UDP datagram and waits for its echo.
    pub fn udp_exchange(&self, dst: SocketAddr, timeout: Duration) -> io::Result<bool> {
        within(&self.workload.name, move || -> io::Result<bool> {
            let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io_err)?;
            let sock = UdpSocket::bind(bind)?;
            sock.set_read_timeout(Some(timeout))?;
            sock.send_to(b"egress", dst)?;
            let mut buf = [0u8; 64];
            Ok(matches!(sock.recv_from(&mut buf), Ok((6, _))))
        })?
    }

    /// From the workload: one ICMP echo with `ping`, true when answered.
    pub fn ping(&self, dst: IpAddr) -> io::Result<bool> {
        ping_in(&self.workload, dst)
    }
}

/// From namespace `ns` (source `src`, or its default address): connects
/// over TCP, sends a line and expects it back. `Ok(false)` when the
/// connection or the echo did not get through within `timeout`.
pub fn tcp_exchange_in(ns: &Netns, src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> io::Result<bool> {
    within(&ns.name, move || -> io::Result<bool> {
        let sock = connect_from(src, dst, timeout);
        let Ok(mut conn) = sock else { return Ok(false) };
        conn.set_read_timeout(Some(timeout))?;
        conn.write_all(b"egress\n")?;
        let mut buf = [0u8; 7];
        Ok(conn.read_exact(&mut buf).is_ok() && &buf == b"egress\n")
    })?
}

/// From namespace `ns`: one ICMP echo with `ping`, true when answered.
pub fn ping_in(ns: &Netns, dst: IpAddr) -> io::Result<bool> {
    let out = exec(&ns.name, &["ping", "-n", "-c", "1", "-W", "1", &dst.to_string()])?;
    Ok(out.status.success())
}

/// A TCP connection from an optional source address with a timeout.
fn connect_from(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match src {
        None => TcpStream::connect_timeout(&dst, timeout),
        Some(src) => {
            let domain = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
            let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh socket we own.
            let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let (sa, len) = sockaddr(SocketAddr::new(src, 0));
            // SAFETY: sa is a valid sockaddr of length len.
            if unsafe { libc::bind(fd, (&raw const sa).cast::<libc::sockaddr>(), len) } != 0 {
                return Err(io::Error::last_os_error());
            }
            stream.set_nonblocking(true)?;
            let (sa, len) = sockaddr(dst);
            // SAFETY: as above.
            let rc = unsafe { libc::connect(fd, (&raw const sa).cast::<libc::sockaddr>(), len) };
            if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(io::Error::last_os_error());
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one pollfd.
            let n = unsafe { libc::poll(&raw mut pfd, 1, timeout.as_millis() as i32) };
            if n != 1 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            stream.set_nonblocking(false)?;
            Ok(stream)
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// The small pack several lab tests enforce: the runtime subnet (IPv4 and
/// IPv6) may reach 203.0.113.10:443 over TCP (plus `also_permit`, e.g.
/// `", 203.0.113.20/32"`, as more destination prefixes); everything else it
/// sends is denied.
pub fn web_pack(also_permit: &str) -> String {
    format!(
        r#"
version: 1
mode: enforce
smartgroups:
  runtime: {{ cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }}
rules:
  - {{ name: allow-web, priority: 10, source: runtime, destination: {{ cidrs: [203.0.113.10/32{also_permit}] }}, protocol: tcp, ports: [443], action: permit }}
  - {{ name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }}
"#
    )
}
