//! The kernel fuzzer's pieces: a mutator of frames, and the reference
//! readers its invariants are checked with, written from the RFCs and the
//! contract rather than from the datapath's parser: a plain-packet reader
//! (a frame whose verdict the compiled pack decides outright) and DNS
//! query and answer readers (`hickory-proto`).

mod answers;
mod mutate;
mod plain;

pub use answers::{answer_gives, ip_cut_short, udp_message};
pub use mutate::mutate;
pub use plain::{Plain, plain};

use egress_policy::evaluate::name_covered;
use egress_policy::model::Pack;

/// Whether `payload` is a DNS query the filter may let through for a
/// source that `permit` rules give the WebGroups `groups` of `pack`: a
/// standard query whose every question names a name those groups cover,
/// with a type `dns.query_types` allows, of class IN. What the reference reader cannot
/// read is not.
pub fn query_permitted(pack: &Pack, groups: &[&str], payload: &[u8]) -> bool {
    use hickory_proto::op::{Message, MessageType, OpCode};
    let Ok(msg) = Message::from_vec(payload) else { return false };
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query || msg.queries().is_empty() {
        return false;
    }
    msg.queries().iter().all(|q| {
        let name = q.name().to_ascii();
        let covered = groups.iter().filter_map(|g| pack.webgroups.get(*g)).any(|g| name_covered(g, &name));
        let class_in = q.query_class() == hickory_proto::rr::DNSClass::IN;
        covered && class_in && pack.dns.query_types.contains(&u16::from(q.query_type()))
    })
}
