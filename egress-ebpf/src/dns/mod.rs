//! DNS in the datapath: queries leaving a workload for a listed resolver
//! are recorded (and filtered); answers on their way back teach the
//! addresses of the question's name, for the workload that asked, before the
//! answer is forwarded.
//!
//! The message is copied into a per-CPU scratch buffer and parsed there with
//! masked indices. Names are compared in full (lowercased, right-aligned in
//! a 256-byte key), never by hash alone; the hash only ties an answer to the
//! question that was asked and tracks the CNAME chain inside one message.
//!
//! Modules, each using only those listed before it:
//! - `message`: the message's place in the packet, its copy, masked reads,
//!   the DNS counters, the agent's lease;
//! - `name`: reading a name, and the WebGroups covering it;
//! - `guard`: the tunnel guard, per workload and allowed zone;
//! - `refuse`: turning a refused query around into a REFUSED answer, and
//!   checksum updates by hand;
//! - `txid`: the gateway's transaction ids, written into recorded queries
//!   and swapped back in their answers;
//! - `query`: recording and filtering queries;
//! - `answer`: learning from answers.

mod answer;
mod guard;
mod message;
mod name;
mod query;
mod refuse;
mod txid;

pub use answer::{on_answer, on_second_answer};
pub use message::{LoadBytes, scratch, stat};
pub use name::groups_of_name;
pub use query::{QueryAction, on_query, unfiltered};
pub use refuse::refuse_in_place;
pub use txid::IdSwap;
