//! What the agent reports: Prometheus metrics ([`metrics`]) and the flow
//! log ([`flowlog`], fed from the datapath's event ring by [`events`]).

pub mod events;
pub mod flowlog;
pub mod metrics;
