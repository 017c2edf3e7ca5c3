//! The map names the agent uses (`egress_common::maps`) are exactly the
//! maps of the built datapath object, whose names come from the `#[map]`
//! statics' identifiers in `egress-ebpf/src/maps.rs`. Reads the ELF object
//! embedded in the agent; needs no root.

use std::collections::BTreeSet;

use egress_agent::datapath::DATAPATH_OBJECT;
use egress_common::maps;

#[test]
fn the_agents_map_names_are_the_objects_maps() {
    let object = aya_obj::Object::parse(DATAPATH_OBJECT).expect("the embedded datapath object parses");
    let in_object: BTreeSet<&str> = object
        .maps
        .keys()
        .map(String::as_str)
        // Sections the object keeps as maps of its own (`.rodata`, `.bss`, ...).
        .filter(|name| !name.starts_with('.'))
        .collect();
    let in_agent: BTreeSet<&str> = maps::all().collect();
    assert_eq!(in_agent.len(), maps::all().count(), "a map name is listed twice");
    let missing: Vec<_> = in_agent.difference(&in_object).collect();
    let unlisted: Vec<_> = in_object.difference(&in_agent).collect();
    assert!(missing.is_empty(), "names the agent uses that the object has no map of: {missing:?}");
    assert!(unlisted.is_empty(), "maps of the object missing from egress_common::maps: {unlisted:?}");
}

#[test]
fn every_map_name_fits_the_kernels_name_field() {
    // The kernel keeps 15 bytes of a name; the agent finds loaded maps by it.
    for name in maps::all() {
        assert!(name.len() <= 15, "{name} is longer than the kernel keeps");
        assert!(name.starts_with(&format!("EGV{}_", maps::LAYOUT_VERSION)), "{name} lacks the layout prefix");
    }
}
