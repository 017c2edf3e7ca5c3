//! The agent's lease on DNS learning ([`maps::AGENT`]): renewed every
//! second by a running agent; past it, names fail closed (see
//! [`AgentLease`]).

use aya::maps::{Array, MapData};
use egress_common::{AgentLease, LEASE_NS, maps};

use super::{Datapath, DatapathError};

impl Datapath {
    /// Renews the agent's lease on DNS learning for [`LEASE_NS`] from now.
    /// A running agent calls it every [`egress_common::LEASE_RENEW_MS`];
    /// loading renews it once. Once it runs out, names fail closed (see
    /// [`AgentLease`]).
    pub fn renew_lease(&mut self) -> Result<(), DatapathError> {
        renew(&mut self.lease)
    }

    /// A second handle on the lease alone, for renewing it apart from
    /// whatever holds the datapath (an install, a metrics scrape walking
    /// the learned table): nothing slow there can let the lease lapse.
    pub fn lease_handle(&self) -> Result<Lease, DatapathError> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let fd = self.lease.map().fd().as_fd().try_clone_to_owned()?;
        let data = MapData::from_fd(fd).map_err(|e| DatapathError::map(maps::AGENT, e))?;
        Ok(Lease(Array::try_from(aya::maps::Map::Array(data)).map_err(|e| DatapathError::map(maps::AGENT, e))?))
    }

    /// Ends the lease now, as if the agent had been down for [`LEASE_NS`]:
    /// queries to resolvers are refused (query filter `enforce`) and
    /// answers teach nothing until [`Datapath::renew_lease`].
    pub fn release_lease(&mut self) -> Result<(), DatapathError> {
        self.lease.set(0, AgentLease::default(), 0).map_err(|e| DatapathError::map(maps::AGENT, e))
    }
}

/// The agent's lease on DNS learning ([`maps::AGENT`]), apart from the
/// datapath: see [`Datapath::lease_handle`].
pub struct Lease(Array<MapData, AgentLease>);

impl Lease {
    /// Renews the lease for [`LEASE_NS`] from now.
    pub fn renew(&mut self) -> Result<(), DatapathError> {
        renew(&mut self.0)
    }
}

fn renew(lease: &mut Array<MapData, AgentLease>) -> Result<(), DatapathError> {
    let lease_value =
        AgentLease { until_ns: crate::clock::monotonic_ns() + LEASE_NS, pid: std::process::id(), _pad: 0 };
    lease.set(0, lease_value, 0).map_err(|e| DatapathError::map(maps::AGENT, e))
}
