//! The read-only commands: `egress-agent status` ([`status`], from the
//! pins), `egress-agent learned` ([`learned`], from the loaded maps) and
//! `egress-agent replay` ([`replay`], recorded flows judged by a candidate
//! pack).

pub mod learned;
pub mod replay;
pub mod status;
