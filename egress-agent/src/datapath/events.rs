//! Items of the event ring ([`egress_common::maps::EVENTS`]) as typed
//! values. The kernel writes a [`FlowEvent`], a [`LearnEvent`] or a
//! [`NamedFlowEvent`]; the kind byte sits at [`EVENT_KIND_OFFSET`] in each.

use egress_common::{
    EVENT_KIND_LEARN, EVENT_KIND_NAMED, EVENT_KIND_OFFSET, EVENT_KIND_TUNNEL, FlowEvent, LearnEvent, NamedFlowEvent,
    TunnelEvent,
};

/// One event of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new flow of a logging rule, a denied or `would_deny` flow, or a
    /// packet that could not be judged.
    Flow(FlowEvent),
    /// What one DNS answer taught a workload.
    Learn(LearnEvent),
    /// A TCP flow's second decision, by address and the name it gave.
    Named(Box<NamedFlowEvent>),
    /// A workload suspected of tunnelling through an allowed DNS zone.
    Tunnel(Box<TunnelEvent>),
}

/// The event in a ring item, or `None` for an item too short for its kind
/// (the kernel never writes one; such an item is skipped).
pub fn decode(item: &[u8]) -> Option<Event> {
    match *item.get(EVENT_KIND_OFFSET)? {
        EVENT_KIND_LEARN => read::<LearnEvent>(item).map(Event::Learn),
        EVENT_KIND_NAMED => read::<NamedFlowEvent>(item).map(|e| Event::Named(Box::new(e))),
        EVENT_KIND_TUNNEL => read::<TunnelEvent>(item).map(|e| Event::Tunnel(Box::new(e))),
        _ => read::<FlowEvent>(item).map(Event::Flow),
    }
}

/// A `T` from the start of `item`, if it holds one whole.
fn read<T: aya::Pod>(item: &[u8]) -> Option<T> {
    // SAFETY: `item` holds at least `size_of::<T>()` bytes (checked), `T`
    // is plain data (any bytes are a valid value), and `read_unaligned`
    // copies it out whatever the alignment of the ring's memory.
    (item.len() >= size_of::<T>()).then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use egress_common::{EVENT_KIND_FLOW, LEARN_EVENT_ADDRS};

    use super::*;

    fn bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: `T` is plain data; its bytes are read as they are.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_both_kinds_and_skips_short_items() {
        let flow = FlowEvent { rule: 7, proto: 6, kind: EVENT_KIND_FLOW, ..FlowEvent::default() };
        assert_eq!(decode(&bytes(&flow)), Some(Event::Flow(flow)));
        let mut learn = LearnEvent { name_hash: 42, count: 1, kind: EVENT_KIND_LEARN, ..LearnEvent::default() };
        learn.addrs[LEARN_EVENT_ADDRS - 1] = [9; 16];
        let item = bytes(&learn);
        assert_eq!(decode(&item), Some(Event::Learn(learn)));
        // Short items: too short for the kind byte, or for the event.
        assert_eq!(decode(&item[..EVENT_KIND_OFFSET]), None);
        assert_eq!(decode(&item[..size_of::<FlowEvent>()]), None);
        assert_eq!(decode(&bytes(&flow)[..=EVENT_KIND_OFFSET]), None);
    }

    #[test]
    fn decodes_a_tunnel_event() {
        let mut ev = TunnelEvent {
            ktime_ns: 5,
            workload: [1; 16],
            zone: 77,
            distinct: 8,
            family: 4,
            mode: 2,
            name_len: 3,
            _pad0: [0; 25],
            kind: EVENT_KIND_TUNNEL,
            _pad1: [0; 3],
            name: [0; egress_common::NAME_BUF],
        };
        ev.name[..3].copy_from_slice(b"a.b");
        let item = bytes(&ev);
        assert_eq!(decode(&item), Some(Event::Tunnel(Box::new(ev))));
        assert_eq!(decode(&item[..size_of::<TunnelEvent>() - 1]), None);
    }
}
