//! Tests of the built eBPF object, without loading it (no root): every name
//! the contract in `sensor-common` declares is in the ELF, with the layout
//! the agent expects.

use aya_obj::{Object, ProgramSection};
use sensor_common::{
    Control, FlowKey, FlowValue, Totals, DEFAULT_FLOW_MAP_ENTRIES, IFACE_INDEX_ENTRIES,
    MAP_CONTROL, MAP_FLOWS_A, MAP_FLOWS_B, MAP_IFACE_INDEX, MAP_IFACE_SLOTS, MAP_NAMES, MAP_TOTALS,
    PROG_NAMES, PROG_TC, PROG_XDP, PROG_XDP_STUB, TOTALS_ENTRIES,
};

fn object() -> Object {
    let bytes = sensor::loader::object();
    assert!(
        !bytes.is_empty(),
        "the object was not built (AYA_BUILD_SKIP set?); build with `cargo xtask build`"
    );
    Object::parse(bytes).expect("the embedded object parses as a BPF ELF")
}

#[test]
fn every_contract_name_is_in_the_elf() {
    let obj = object();
    for name in MAP_NAMES {
        assert!(
            obj.maps.contains_key(name),
            "map {name} missing from the ELF"
        );
        assert!(
            name.len() <= 15,
            "map name {name} longer than the kernel keeps"
        );
    }
    for name in PROG_NAMES {
        assert!(
            obj.programs.contains_key(name),
            "program {name} missing from the ELF"
        );
    }
}

#[test]
fn programs_have_the_expected_types() {
    let obj = object();
    for name in [PROG_XDP, PROG_XDP_STUB] {
        assert!(
            matches!(obj.programs[name].section, ProgramSection::Xdp { .. }),
            "{name} is not an XDP program"
        );
    }
    assert!(matches!(
        obj.programs[PROG_TC].section,
        ProgramSection::SchedClassifier
    ));
    let license = obj.programs[PROG_XDP].license.to_str().expect("license");
    assert!(license.contains("GPL"), "license {license:?}");
}

#[test]
fn map_layouts_match_the_contract() {
    let obj = object();
    let m = |n: &str| &obj.maps[n];
    const PERCPU_HASH: u32 = 5;
    const PERCPU_ARRAY: u32 = 6;
    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    const NO_PREALLOC: u32 = 1;
    for name in [MAP_FLOWS_A, MAP_FLOWS_B] {
        let map = m(name);
        assert_eq!(map.map_type(), PERCPU_HASH, "{name} type");
        assert_eq!(map.key_size() as usize, size_of::<FlowKey>(), "{name} key");
        assert_eq!(
            map.value_size() as usize,
            size_of::<FlowValue>(),
            "{name} value"
        );
        assert_eq!(
            map.max_entries(),
            DEFAULT_FLOW_MAP_ENTRIES,
            "{name} entries"
        );
        assert_eq!(map.map_flags() & NO_PREALLOC, 0, "{name} is preallocated");
    }
    let t = m(MAP_TOTALS);
    assert_eq!(t.map_type(), PERCPU_ARRAY);
    assert_eq!(t.value_size() as usize, size_of::<Totals>());
    assert_eq!(t.max_entries(), TOTALS_ENTRIES);
    let s = m(MAP_IFACE_SLOTS);
    assert_eq!((s.map_type(), s.key_size(), s.value_size()), (HASH, 4, 4));
    let x = m(MAP_IFACE_INDEX);
    assert_eq!(
        (x.map_type(), x.value_size(), x.max_entries()),
        (ARRAY, 4, IFACE_INDEX_ENTRIES)
    );
    let c = m(MAP_CONTROL);
    assert_eq!(c.map_type(), ARRAY);
    assert_eq!(
        (c.value_size() as usize, c.max_entries()),
        (size_of::<Control>(), 1)
    );
}
