//! Hooks for the lab's tests and benches (feature `lab`, which only the lab
//! crate turns on): they reach into the datapath in ways an operator never
//! should, so a product build does not have them.

use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, TcAttachType, Xdp};
use egress_common::{Bucket, BudgetKey, QueryKey, QueryValue, SPEND_KINDS, maps};

use super::attach::link_error;
use super::pin::LinkKind;
use super::{Datapath, DatapathError, EMPTY_PROGRAM, XDP_PROGRAM, map_mut, program_mut};

impl Datapath {
    /// Benchmarks only: with `false`, packs installed afterwards decide every
    /// packet afresh (nothing is cached), so repeated runs of one packet
    /// measure the new-flow path.
    pub fn set_flow_cache(&mut self, enabled: bool) {
        self.flow_cache = enabled;
    }

    /// Benchmarks and tests only: attaches the empty program to `iface`'s
    /// TC ingress and egress, where the judging and learning programs would
    /// go. Without pins the links go when the datapath is dropped (the
    /// benchmarks' floor under any TC program); with pins they are pinned
    /// where this build's would be, a stand-in for another build's programs.
    pub fn attach_empty(&mut self, iface: &str) -> Result<(), DatapathError> {
        let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, EMPTY_PROGRAM)?;
        for (at, kind) in [(TcAttachType::Ingress, LinkKind::TcIngress), (TcAttachType::Egress, LinkKind::TcEgress)] {
            let id = prog.attach(iface, at).map_err(|e| DatapathError::program(EMPTY_PROGRAM, e))?;
            if let Some(path) = self.pins.as_ref().map(|p| p.link(iface, kind)) {
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(|e| DatapathError::program(EMPTY_PROGRAM, e))?
                    .try_into()
                    .map_err(link_error)?;
                link.pin(&path).map_err(link_error)?;
            }
        }
        Ok(())
    }

    /// Records an outstanding query as the query program would (benchmarks
    /// replay one answer many times; each answer consumes its query).
    pub fn track_query(&mut self, key: &QueryKey, name: &str, qtype: u16) -> Result<(), DatapathError> {
        let mut queries: aya::maps::HashMap<_, QueryKey, QueryValue> = map_mut(&mut self.ebpf, maps::QUERIES)?;
        let value = QueryValue {
            name_hash: egress_common::fnv1a(name.to_ascii_lowercase().trim_end_matches('.').as_bytes()),
            sent_ns: crate::clock::monotonic_ns(),
            qtype,
            // As if the workload had chosen the gateway's id.
            workload_txid_be: key.txid_be,
            ..QueryValue::default()
        };
        queries.insert(key, value, 0).map_err(|e| DatapathError::map(maps::QUERIES, e))
    }

    /// Benchmarks only: refills every budget (each bucket's clock set back
    /// to 0, so its next spend finds it full), so that a bench that replays
    /// one packet thousands of times measures the spend, not a refusal.
    pub fn refill_budgets(&mut self) -> Result<(), DatapathError> {
        for name in [maps::BUDGETS, maps::HOST_BUDGETS] {
            let mut table: aya::maps::HashMap<_, BudgetKey, Bucket> = map_mut(&mut self.ebpf, name)?;
            let keys: Vec<BudgetKey> = table.keys().filter_map(Result::ok).collect();
            for key in keys {
                table.insert(key, Bucket::default(), 0).map_err(|e| DatapathError::map(name, e))?;
            }
        }
        let mut all: aya::maps::Array<_, Bucket> = map_mut(&mut self.ebpf, maps::ALL_BUDGETS)?;
        for kind in 0..SPEND_KINDS {
            all.set(kind, Bucket::default(), 0).map_err(|e| DatapathError::map(maps::ALL_BUDGETS, e))?;
        }
        Ok(())
    }

    /// Tests only: empties the program arrays' slots that hold the query
    /// programs, so that the judges' tail calls into them fail.
    pub fn remove_query_programs(&mut self) -> Result<(), DatapathError> {
        for tails in [maps::TAILS_TC, maps::TAILS_XDP] {
            let mut array: aya::maps::ProgramArray<&mut aya::maps::MapData> = map_mut(&mut self.ebpf, tails)?;
            array.clear_index(&egress_common::TAIL_QUERY).map_err(|e| DatapathError::map(tails, e))?;
        }
        Ok(())
    }

    /// A loaded TC program by name, for `BPF_PROG_TEST_RUN`.
    pub fn tc_program(&mut self, name: &str) -> Result<&mut SchedClassifier, DatapathError> {
        program_mut(&mut self.ebpf, name)
    }

    /// The loaded XDP program, for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        program_mut(&mut self.ebpf, XDP_PROGRAM)
    }
}
