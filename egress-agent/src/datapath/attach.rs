//! Attaching the datapath to interfaces: TC (tcx) or XDP for judging,
//! TC egress for DNS learning; links pinned when the datapath is. A pinned
//! link found running another build's program is switched to this build's
//! in one link update (an agent upgrade, no moment without a program).

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};

use super::pin::LinkKind;
use super::{DNS_PROGRAM, Datapath, DatapathError, Hook, TC_PROGRAM, XDP_PROGRAM, program_mut};

/// What [`Datapath::attach`] did on one interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Links attached now.
    pub new: usize,
    /// Pinned links kept as they are: they run this build's program already
    /// (same program id, nothing re-attached).
    pub kept: usize,
    /// Pinned links that ran another build's program and now run this
    /// build's: `(link pin name, old program id, new program id)`.
    pub upgraded: Vec<(String, u32, u32)>,
    /// A pinned judging link of the other hook (left by an agent run with
    /// or without `--xdp`), removed once this hook's link judged.
    pub replaced: Option<String>,
    /// Pinned links whose interface went away (deleted and created again:
    /// the kernel detached them, their pins kept them), attached anew.
    pub stale: usize,
}

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface the link pinned at `path` is attached to: 0 once the
/// kernel detached it (its device went away). Read from `bpf_link_info`,
/// whose tcx and xdp parts both start with the ifindex (aya does not
/// expose it).
pub fn pinned_link_ifindex(path: &Path) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd as _;
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let fd = super::barrier::bpf(BPF_OBJ_GET, &mut ObjGetAttr { pathname: c.as_ptr() as u64, ..Default::default() })?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u64; 16];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    super::barrier::bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // type, id, prog_id (u32 each), then the 8-aligned union at byte 16.
    Ok(info[2] as u32)
}

/// The link-layer type of `iface` (`ARPHRD_*`), by `SIOCGIFHWADDR`.
fn link_type(iface: &str) -> std::io::Result<u16> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: a plain socket, owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::other(format!("interface name too long: {iface}")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR wrote the hardware-address member.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// The current index of interface `iface` (0 if there is none now).
fn ifindex_of(iface: &str) -> u32 {
    match std::ffi::CString::new(iface) {
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        Ok(name) => unsafe { libc::if_nametoindex(name.as_ptr()) },
        Err(_) => 0,
    }
}

pub(super) fn link_error(e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Io(std::io::Error::other(e.to_string()))
}

/// The tag (a hash of the instructions, map references aside) of the
/// loaded program `id`, if it is still loaded.
fn program_tag(id: u32) -> Option<u64> {
    aya::programs::loaded_programs().filter_map(Result::ok).find(|p| p.id() == id).map(|p| p.tag())
}

impl LinkKind {
    /// The program this build attaches at this hook.
    fn program(self) -> &'static str {
        match self {
            LinkKind::TcIngress => TC_PROGRAM,
            LinkKind::TcEgress => DNS_PROGRAM,
            LinkKind::Xdp => XDP_PROGRAM,
        }
    }
}

impl Datapath {
    /// Attaches the judging program to `iface`'s ingress and the DNS
    /// learning program to its egress. With pins, each link is pinned, and a
    /// link already pinned (an adopted datapath) is kept as it is when it
    /// runs this build's program, or switched to it atomically when it runs
    /// another build's (see [`Attached`]).
    pub fn attach(&mut self, iface: &str, hook: Hook) -> Result<Attached, DatapathError> {
        let ingress = match hook {
            Hook::Tc => LinkKind::TcIngress,
            Hook::Xdp => LinkKind::Xdp,
        };
        let mut attached = Attached::default();
        // The programs read an Ethernet header at the start of every frame;
        // on a tun or WireGuard interface they would read IP header bytes
        // as one and let everything through as "not IP".
        match link_type(iface)? {
            libc::ARPHRD_ETHER => {}
            other => {
                return Err(DatapathError::Io(std::io::Error::other(format!(
                    "{iface} is not an Ethernet interface (link type {other}): the datapath judges Ethernet frames only"
                ))));
            }
        }
        self.mark_lan(iface)?;
        for kind in [ingress, LinkKind::TcEgress] {
            let pin_path = self.pins.as_ref().map(|p| p.link(iface, kind));
            if let Some(path) = pin_path.as_ref().filter(|p| p.exists())
                && pinned_link_ifindex(path)? != ifindex_of(iface)
            {
                // Its interface was deleted (and maybe created again): the
                // kernel detached the link; attach anew below.
                std::fs::remove_file(path)?;
                attached.stale += 1;
            }
            if let Some(path) = pin_path.as_ref().filter(|p| p.exists()) {
                match self.upgrade_pinned(path, kind)? {
                    Some((old, new)) => {
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        attached.upgraded.push((name, old, new));
                    }
                    None => attached.kept += 1,
                }
                continue;
            }
            let link: Option<aya::programs::links::FdLink> = match kind {
                LinkKind::TcIngress | LinkKind::TcEgress => {
                    let (name, at) = match kind {
                        LinkKind::TcIngress => (TC_PROGRAM, TcAttachType::Ingress),
                        _ => (DNS_PROGRAM, TcAttachType::Egress),
                    };
                    let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, name)?;
                    let id = prog.attach(iface, at).map_err(|e| DatapathError::program(name, e))?;
                    match pin_path {
                        Some(_) => {
                            let link = prog.take_link(id).map_err(|e| DatapathError::program(name, e))?;
                            Some(link.try_into().map_err(|e| DatapathError::Io(std::io::Error::other(e)))?)
                        }
                        None => None,
                    }
                }
                LinkKind::Xdp => {
                    let prog: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
                    let id =
                        prog.attach(iface, XdpMode::Default).map_err(|e| DatapathError::program(XDP_PROGRAM, e))?;
                    match pin_path {
                        Some(_) => {
                            let link = prog.take_link(id).map_err(|e| DatapathError::program(XDP_PROGRAM, e))?;
                            Some(link.try_into().map_err(|e| DatapathError::Io(std::io::Error::other(e)))?)
                        }
                        None => None,
                    }
                }
            };
            if let (Some(link), Some(path)) = (link, pin_path) {
                link.pin(&path).map_err(|e| DatapathError::Io(std::io::Error::other(e)))?;
            }
            attached.new += 1;
        }
        // The other hook's judging link, if an agent pinned one: ours judges
        // by now, so removing its pin (its last reference) detaches it with
        // no moment unjudged, and no packet is judged twice from then on.
        let other = match hook {
            Hook::Tc => LinkKind::Xdp,
            Hook::Xdp => LinkKind::TcIngress,
        };
        if let Some(path) = self.pins.as_ref().map(|p| p.link(iface, other)).filter(|p| p.exists()) {
            std::fs::remove_file(&path)?;
            attached.replaced = path.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        Ok(attached)
    }

    /// With pins: re-attaches the links of `iface` whose interface went
    /// away and came back (the kernel detached them; their pins kept them
    /// looking attached). Called periodically; returns how many.
    pub fn repair_links(&mut self, iface: &str, hook: Hook) -> Result<usize, DatapathError> {
        let Some(pins) = self.pins.clone() else { return Ok(0) };
        let ingress = match hook {
            Hook::Tc => LinkKind::TcIngress,
            Hook::Xdp => LinkKind::Xdp,
        };
        let now = ifindex_of(iface);
        let stale = [ingress, LinkKind::TcEgress]
            .iter()
            .map(|k| pins.link(iface, *k))
            .any(|p| p.exists() && pinned_link_ifindex(&p).is_ok_and(|i| i != now));
        if !stale || now == 0 {
            return Ok(0); // fine, or the interface is not back yet
        }
        Ok(self.attach(iface, hook)?.stale)
    }

    /// Makes the pinned link at `path` run this build's program for `kind`:
    /// nothing to do when it does already (same tag); otherwise one
    /// `BPF_LINK_UPDATE` swaps the program under the link, which stays
    /// attached and pinned. Returns the old and new program ids when it
    /// swapped.
    fn upgrade_pinned(&mut self, path: &Path, kind: LinkKind) -> Result<Option<(u32, u32)>, DatapathError> {
        let link: FdLink = PinnedLink::from_pin(path).map_err(link_error)?.into();
        let running = link.info().map_err(link_error)?.program_id();
        let name = kind.program();
        let ours = self
            .ebpf
            .program(name)
            .ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?
            .info()
            .map_err(|e| DatapathError::program(name, e))?;
        if program_tag(running) == Some(ours.tag()) {
            return Ok(None);
        }
        match kind {
            LinkKind::TcIngress | LinkKind::TcEgress => {
                let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, name)?;
                let link = SchedClassifierLink::try_from(link).map_err(link_error)?;
                let id = prog.attach_to_link(link).map_err(|e| DatapathError::program(name, e))?;
                // The pin holds the link; this program object need not.
                drop(prog.take_link(id).map_err(|e| DatapathError::program(name, e))?);
            }
            LinkKind::Xdp => {
                let prog: &mut Xdp = program_mut(&mut self.ebpf, name)?;
                let link = XdpLink::try_from(link).map_err(link_error)?;
                let id = prog.attach_to_link(link).map_err(|e| DatapathError::program(name, e))?;
                drop(prog.take_link(id).map_err(|e| DatapathError::program(name, e))?);
            }
        }
        Ok(Some((running, ours.id())))
    }
}
