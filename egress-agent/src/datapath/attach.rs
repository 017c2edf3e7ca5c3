//! Attaching the datapath to interfaces: TC (tcx) or XDP for judging,
//! TC egress for DNS learning; links pinned when the datapath is.

use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};

use super::pin::LinkKind;
use super::{DNS_PROGRAM, Datapath, DatapathError, EMPTY_PROGRAM, Hook, TC_PROGRAM, XDP_PROGRAM, program_mut};

impl Datapath {
    /// Attaches the judging program to `iface`'s ingress and the DNS
    /// learning program to its egress. With pins, each link is pinned, and a
    /// link already pinned (an adopted datapath) is kept as it is. Returns
    /// how many links were attached now.
    pub fn attach(&mut self, iface: &str, hook: Hook) -> Result<usize, DatapathError> {
        let ingress = match hook {
            Hook::Tc => LinkKind::TcIngress,
            Hook::Xdp => LinkKind::Xdp,
        };
        let mut attached = 0;
        for kind in [ingress, LinkKind::TcEgress] {
            let pin_path = self.pins.as_ref().map(|p| p.link(iface, kind));
            if pin_path.as_ref().is_some_and(|p| p.exists()) {
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
                    let id = prog.attach(iface, XdpMode::Default).map_err(|e| DatapathError::program(XDP_PROGRAM, e))?;
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
            attached += 1;
        }
        Ok(attached)
    }

    /// Benchmarks only: attaches the empty program to `iface`'s TC ingress
    /// and egress, where the judging and learning programs would go (not
    /// pinned; detached when the datapath is dropped). Measures what any TC
    /// program costs, the floor under the agent's own.
    pub fn attach_empty(&mut self, iface: &str) -> Result<(), DatapathError> {
        let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, EMPTY_PROGRAM)?;
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            prog.attach(iface, at).map_err(|e| DatapathError::program(EMPTY_PROGRAM, e))?;
        }
        Ok(())
    }
}
