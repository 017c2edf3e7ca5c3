//! A second host on the workload's link: a macvlan of the workload's
//! `wl0` in a namespace of its own, so it has a link-layer address of its
//! own (the lab's `NEIGHBOUR_V4` is only another address of the workload's
//! interface). It can also send frames it writes whole, with any source
//! MAC.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::lab::{GATEWAY_V4, GATEWAY_V6, Lab, tcp_exchange_in};
use super::netns::{Netns, exec, within};

/// The neighbour's interface.
pub const DEV: &str = "nb0";

/// A neighbour host; its namespace is deleted on drop.
pub struct Neighbour {
    pub ns: Netns,
}

impl Neighbour {
    /// Adds a neighbour with addresses `v4` and `v6` (in the workload's
    /// subnets) to `lab`'s workload link, routed through the gateway.
    pub fn new(lab: &Lab, v4: &str, v6: &str) -> io::Result<Self> {
        let ns = Netns::new(&format!("egnb-{}", &lab.workload.name[5..]))?;
        lab.workload.ip(&["link", "add", DEV, "link", "wl0", "type", "macvlan", "mode", "bridge"])?;
        lab.workload.ip(&["link", "set", DEV, "netns", &ns.name])?;
        ns.ip(&["link", "set", DEV, "up"])?;
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", DEV])?;
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", DEV, "nodad"])?;
        ns.ip(&["route", "add", "default", "via", GATEWAY_V4])?;
        ns.ip(&["-6", "route", "add", "default", "via", GATEWAY_V6])?;
        Ok(Neighbour { ns })
    }

    /// Connects over TCP to `dst`, sends a line and expects it back.
    pub fn tcp_exchange(&self, dst: SocketAddr, timeout: Duration) -> io::Result<bool> {
        tcp_exchange_in(&self.ns, None, dst, timeout)
    }

    /// Sends `frame` (Ethernet header included, as written) out of its
    /// interface.
    pub fn send_frame(&self, frame: Vec<u8>) -> io::Result<()> {
        within(&self.ns.name, move || send_frame(DEV, &frame))?
    }

    /// Sends frames `frame(0)` .. `frame(count - 1)` out of its interface
    /// through one socket, as fast as it can: a flood. Returns how many
    /// the kernel took (a full queue refuses some).
    pub fn flood(&self, count: u64, frame: impl Fn(u64) -> Vec<u8> + Send + 'static) -> io::Result<u64> {
        within(&self.ns.name, move || {
            let socket = FrameSocket::open(DEV)?;
            let mut sent = 0;
            for i in 0..count {
                if socket.send(&frame(i)).is_ok() {
                    sent += 1;
                }
            }
            Ok(sent)
        })?
    }
}

/// The link-layer address of `dev` in namespace `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> io::Result<[u8; 6]> {
    let out = exec(&ns.name, &["cat", &format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    bytes.try_into().map_err(|_| io::Error::other(format!("no MAC for {dev} in {}: {text}", ns.name)))
}

/// An `AF_PACKET` socket that sends whole frames out of one interface;
/// closed on drop.
struct FrameSocket {
    fd: libc::c_int,
    ifindex: libc::c_int,
}

impl FrameSocket {
    /// Opens a socket on `dev` (in this thread's namespace).
    fn open(dev: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(dev).map_err(io::Error::other)?;
        // SAFETY: if_nametoindex reads a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); closed on drop.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FrameSocket { fd, ifindex: ifindex as libc::c_int })
    }

    /// Sends `frame` (Ethernet header included) as written.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the frame and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for FrameSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// Sends one frame through an `AF_PACKET` socket on `dev` (this thread's
/// namespace).
fn send_frame(dev: &str, frame: &[u8]) -> io::Result<()> {
    FrameSocket::open(dev)?.send(frame)
}
