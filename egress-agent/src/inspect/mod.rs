//! The read-only commands: `egress-agent status` ([`status`], from the
//! pins) and `egress-agent learned` ([`learned`], from the loaded maps).

pub mod learned;
pub mod status;
