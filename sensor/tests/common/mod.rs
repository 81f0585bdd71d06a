//! Shared helpers of the integration tests: frame building with etherparse,
//! and a harness that loads the object and drives its programs through
//! BPF_PROG_TEST_RUN. These tests need root (or CAP_BPF + CAP_NET_ADMIN +
//! CAP_PERFMON); they fail, never skip, without it.
#![allow(dead_code)]

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use etherparse::{
    EtherType, Ethernet2Header, IpAuthHeader, IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, TcpHeader, UdpHeader,
    VlanId, VlanPcp,
};
use sensor::{
    drain::Drainer,
    loader::{LoadOptions, Sensor, XdpModeSetting},
    model::{merge_totals, Interval},
};
use sensor_common::{Direction, Totals, PROG_TC, PROG_XDP};

pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;

pub const SRC4: [u8; 4] = [198, 18, 0, 1];
pub const DST4: [u8; 4] = [198, 18, 0, 2];
pub const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The ifindex BPF_PROG_TEST_RUN reports: the loopback device of the test's
/// network namespace.
pub const TEST_IFINDEX: u32 = 1;

/// Loads a fresh copy of the object (its own maps) and drives it.
pub struct Harness {
    pub sensor: Sensor,
    pub drainer: Drainer,
}

impl Harness {
    pub fn new(flow_map_entries: u32) -> Harness {
        let mut sensor = Sensor::load(&LoadOptions {
            flow_map_entries,
            xdp_mode: XdpModeSetting::Auto,
            pin_path: None,
        })
        .unwrap_or_else(|e| match e {
            sensor::loader::LoadError::Verifier { ref log, .. } => {
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "loading the object: {e}\nverifier log (tail):\n{}",
                    tail.join("\n")
                )
            }
            e => panic!("loading the object (needs root): {e}"),
        });
        sensor
            .register_slot(TEST_IFINDEX, "lo")
            .expect("slot for lo");
        let drainer = sensor.drainer().expect("drainer");
        Harness { sensor, drainer }
    }

    /// Runs the XDP program once on `frame`; returns its action.
    pub fn xdp(&mut self, frame: &[u8]) -> u32 {
        self.xdp_repeat(frame, 1)
    }

    pub fn xdp_repeat(&mut self, frame: &[u8], repeat: u32) -> u32 {
        xdp_run(&mut self.sensor, frame, repeat)
    }

    /// Like [`Harness::xdp`], but returns the kernel's refusal to run the
    /// program (BPF_PROG_TEST_RUN checks the input's size first).
    pub fn try_xdp(&mut self, frame: &[u8]) -> Result<u32, aya::programs::ProgramError> {
        let prog: &mut Xdp = self
            .sensor
            .ebpf_mut()
            .program_mut(PROG_XDP)
            .expect("xdp program")
            .try_into()
            .expect("xdp type");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        prog.test_run(opts).map(|r| r.return_value)
    }

    /// Runs the TC program once on `frame`; returns its verdict.
    pub fn tc(&mut self, frame: &[u8]) -> u32 {
        self.try_tc(frame)
            .unwrap_or_else(|e| panic!("tc test run of {} bytes: {e}", frame.len()))
    }

    /// Like [`Harness::tc`], but returns the kernel's refusal to run the
    /// program (it validates L2/L3 headers of skb test input first).
    pub fn try_tc(&mut self, frame: &[u8]) -> Result<u32, aya::programs::ProgramError> {
        let prog: &mut SchedClassifier = self
            .sensor
            .ebpf_mut()
            .program_mut(PROG_TC)
            .expect("tc program")
            .try_into()
            .expect("tc type");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        prog.test_run(opts).map(|r| r.return_value)
    }

    pub fn drain(&mut self) -> Interval {
        self.drainer.drain().expect("drain")
    }
}

/// A second handle on the totals map the drainer owns: reads one slot and
/// direction straight from the kernel, summed over CPUs, without a drain
/// (per-frame checks between drains).
pub struct TotalsReader {
    map: aya::maps::PerCpuArray<aya::maps::MapData, Totals>,
    index: u32,
}

impl TotalsReader {
    pub fn read(&self) -> Totals {
        let values = self.map.get(&self.index, 0).expect("reading the totals");
        let mut t = Totals::default();
        for v in values.iter() {
            merge_totals(&mut t, v);
        }
        t
    }
}

impl Harness {
    /// Opens a [`TotalsReader`] on the test interface's totals for `dir`.
    /// The map is found through the XDP program's own map ids, so another
    /// loaded copy of the object is never read.
    pub fn totals_reader(&mut self, dir: Direction) -> TotalsReader {
        use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
        let slot = self
            .sensor
            .register_slot(TEST_IFINDEX, "lo")
            .expect("slot for lo");
        let prog: &Xdp = self
            .sensor
            .ebpf_mut()
            .program(PROG_XDP)
            .expect("xdp program")
            .try_into()
            .expect("xdp type");
        let ids = prog
            .info()
            .expect("program info")
            .map_ids()
            .expect("map ids")
            .expect("the kernel reports map ids");
        let id = ids
            .into_iter()
            .find(|id| {
                MapInfo::from_id(*id)
                    .is_ok_and(|m| m.name_as_str() == Some(sensor_common::MAP_TOTALS))
            })
            .expect("the XDP program uses the totals map");
        let data = MapData::from_id(id).expect("opening the totals map");
        TotalsReader {
            map: PerCpuArray::try_from(Map::PerCpuArray(data)).expect("totals map type"),
            index: sensor_common::totals_index(slot, dir as u8),
        }
    }
}

/// Runs the XDP program `repeat` times on `frame` (BPF_PROG_TEST_RUN).
pub fn xdp_run(sensor: &mut Sensor, frame: &[u8], repeat: u32) -> u32 {
    let prog: &mut Xdp = sensor
        .ebpf_mut()
        .program_mut(PROG_XDP)
        .expect("xdp program")
        .try_into()
        .expect("xdp type");
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    prog.test_run(opts)
        .unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()))
        .return_value
}

/// The totals of one direction on the test interface.
pub fn totals(iv: &Interval, dir: Direction) -> Totals {
    let mut t = Totals::default();
    for it in iv.totals.iter().filter(|t| t.direction == dir) {
        merge_totals(&mut t, &it.totals);
    }
    t
}

pub fn eth(ether_type: u16) -> Vec<u8> {
    Ethernet2Header {
        source: [0x02, 0, 0, 0, 0, 1],
        destination: [0x02, 0, 0, 0, 0, 2],
        ether_type: EtherType(ether_type),
    }
    .to_bytes()
    .to_vec()
}

pub fn vlan(id: u16, ether_type: u16) -> Vec<u8> {
    SingleVlanHeader {
        pcp: VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: VlanId::try_new(id).expect("vlan id"),
        ether_type: EtherType(ether_type),
    }
    .to_bytes()
    .to_vec()
}

pub fn ipv4(proto: u8, payload_len: usize) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload_len as u16, 64, IpNumber(proto), SRC4, DST4).expect("v4");
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

/// IPv4 header with a fragment offset (in 8-byte units) and MF flag.
pub fn ipv4_frag(proto: u8, payload_len: usize, offset: u16, more: bool) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload_len as u16, 64, IpNumber(proto), SRC4, DST4).expect("v4");
    h.fragment_offset = IpFragOffset::try_new(offset).expect("offset");
    h.more_fragments = more;
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

/// IPv4 header with `opt_words` 4-byte words of NOP options.
pub fn ipv4_opts(proto: u8, payload_len: usize, opt_words: usize) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload_len as u16, 64, IpNumber(proto), SRC4, DST4).expect("v4");
    let opts = vec![1u8; opt_words * 4];
    h.options = opts.as_slice().try_into().expect("options");
    h.set_payload_len(payload_len).expect("payload length");
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

pub fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload_len as u16,
        next_header: IpNumber(next),
        hop_limit: 64,
        source: SRC6,
        destination: DST6,
    }
    .to_bytes()
    .to_vec()
}

/// A generic IPv6 extension header (hop-by-hop, routing, destination
/// options) of 8 bytes.
pub fn ext(next: u8) -> Vec<u8> {
    Ipv6RawExtHeader::new_raw(IpNumber(next), &[0u8; 6])
        .expect("ext")
        .to_bytes()
        .to_vec()
}

pub fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
    Ipv6FragmentHeader::new(
        IpNumber(next),
        IpFragOffset::try_new(offset).expect("offset"),
        more,
        0x1234,
    )
    .to_bytes()
    .to_vec()
}

pub fn auth(next: u8) -> Vec<u8> {
    IpAuthHeader::new(IpNumber(next), 1, 1, &[0u8; 4])
        .expect("ah")
        .to_bytes()
        .to_vec()
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = TcpHeader::new(sport, dport, 1, 1024);
    h.fin = flags & 0x01 != 0;
    h.syn = flags & 0x02 != 0;
    h.rst = flags & 0x04 != 0;
    h.psh = flags & 0x08 != 0;
    h.ack = flags & 0x10 != 0;
    h.to_bytes().to_vec()
}

pub fn udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (8 + payload_len) as u16,
        checksum: 0,
    }
    .to_bytes()
    .to_vec()
}

/// An ICMP or ICMPv6 header: type, code, checksum (0) and 4 rest bytes.
pub fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0, 1, 0, 1]
}

/// An SCTP common header.
pub fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    v
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub mod capture;
pub mod e2e;
pub mod livegen;
pub mod netns;
pub mod scrape;
