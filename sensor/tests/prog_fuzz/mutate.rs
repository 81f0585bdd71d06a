//! Mutations of the property test: truncations, lengths cut short, bad IP
//! header fields, nested VLAN tags, fragments, non-IP and random frames.

use etherparse::{EtherType, Ethernet2Header, IpFragOffset, IpHeaders, Ipv6Extensions};

use crate::{
    build::{
        ext_chain, few_tags, frag_header, payload_len, rand_exts, rand_tags, spec, splice_tags,
        DST_MAC, SRC_MAC, TPIDS,
    },
    frames::Rng,
};

/// Non-IP EtherTypes: ARP, RARP, LLDP, MPLS, PPPoE, EAPOL, MACsec, the old
/// 0x9200 QinQ tag the kernel does not walk, and a local experimental one.
const NON_IP: [u16; 11] = [
    0x0806, 0x8035, 0x88cc, 0x8847, 0x8848, 0x8863, 0x8864, 0x888e, 0x88e5, 0x9200, 0x88b5,
];

/// A base frame for truncation and byte flips: a well-formed frame, an
/// extension chain or a nested VLAN frame.
pub fn any_base(r: &mut Rng, linear: usize) -> Vec<u8> {
    match r.below(10) {
        0..=5 => {
            let s = spec(r, None, None);
            s.build(&r.bytes_below(64))
        }
        6..=8 => ext_chain(r, false),
        _ => vlan_nest(r, linear),
    }
}

/// Offset of the IP header behind any VLAN tags, and whether it is IPv6
/// (by EtherType).
pub fn ip_offset(f: &[u8]) -> Option<(usize, bool)> {
    let mut o = 12;
    while o + 2 <= f.len() {
        match u16::from_be_bytes([f[o], f[o + 1]]) {
            t if TPIDS.contains(&t) => o += 4,
            0x0800 => return Some((o + 2, false)),
            0x86dd => return Some((o + 2, true)),
            _ => return None,
        }
    }
    None
}

/// The IP length fields cut short inside the IP payload, so the cut lands
/// in an extension or transport header rather than showing as a length
/// that disagrees with the frame; the bytes after the new end are dropped
/// or stay as Ethernet padding.
pub fn short_length(r: &mut Rng, linear: usize) -> Vec<u8> {
    let mut f = match r.below(3) {
        0 => ext_chain(r, false),
        1 => vlan_nest(r, linear),
        _ => {
            let s = spec(r, None, None);
            let n = r.below(64);
            s.build(&r.bytes(n))
        }
    };
    let Some((o, v6)) = ip_offset(&f) else {
        return f;
    };
    let head = if v6 { 40 } else { (f[o] & 0x0f) as usize * 4 };
    if f.len() <= o + head {
        return f;
    }
    let end = o + head + r.below((f.len() - o - head).min(72) + 1);
    if v6 {
        f[o + 4..o + 6].copy_from_slice(&((end - o - 40) as u16).to_be_bytes());
    } else {
        f[o + 2..o + 4].copy_from_slice(&((end - o) as u16).to_be_bytes());
    }
    if r.one_in(2) {
        f.truncate(end);
    }
    f
}

/// IPv4 with a bad IHL, total length or version (the checksum is left as
/// it was: neither parser checks it).
pub fn bad_ipv4(r: &mut Rng, linear: usize) -> Vec<u8> {
    let s = spec(r, Some(false), None);
    let n = payload_len(r, linear).min(200);
    let mut f = s.build(&r.bytes(n));
    let o = s.ip_off();
    let total = u16::from_be_bytes([f[o + 2], f[o + 3]]) as usize;
    let ihl = (f[o] & 0x0f) as usize * 4;
    let bad_total = |r: &mut Rng| -> u16 {
        let t = match r.below(8) {
            0 => 0,
            1 => r.below(20),
            2 => r.below(ihl + 1),
            3 => total - 1,
            4 => total + 1,
            5 => total + r.range(1, 64),
            6 => 0xffff,
            _ => r.u16() as usize,
        };
        t as u16
    };
    match r.below(5) {
        0 => f[o] = 0x40 | r.below(16) as u8,
        1 => f[o + 2..o + 4].copy_from_slice(&bad_total(r).to_be_bytes()),
        2 => f[o] = (r.below(16) as u8) << 4 | (f[o] & 0x0f),
        3 => {
            f[o] = 0x40 | r.below(16) as u8;
            f[o + 2..o + 4].copy_from_slice(&bad_total(r).to_be_bytes());
        }
        _ => {
            // Options longer than the frame holds.
            f[o] = 0x4f;
            f.truncate(o + r.range(20, 59).min(f.len() - o));
        }
    }
    f
}

/// IPv6 with a payload length that disagrees with the frame, or a bad
/// version.
pub fn bad_ipv6(r: &mut Rng, linear: usize) -> Vec<u8> {
    let s = spec(r, Some(true), None);
    let n = payload_len(r, linear).min(200);
    let mut f = s.build(&r.bytes(n));
    let o = s.ip_off();
    let pl = u16::from_be_bytes([f[o + 4], f[o + 5]]) as usize;
    let bad = match r.below(8) {
        0 => 0,
        1 => pl.saturating_sub(1),
        2 => pl + 1,
        3 => pl + r.range(1, 64),
        4 => r.below(pl + 1),
        5 => 0xffff,
        6 => {
            f[o] = (r.below(16) as u8) << 4 | (f[o] & 0x0f);
            pl
        }
        _ => r.u16() as usize,
    };
    f[o + 4..o + 6].copy_from_slice(&(bad as u16).to_be_bytes());
    f
}

/// One to four VLAN tags with any of the walked TPIDs; now and then the
/// innermost EtherType is not IP.
pub fn vlan_nest(r: &mut Rng, linear: usize) -> Vec<u8> {
    let tags = r.pick(&[1usize, 1, 2, 2, 3, 3, 4]);
    let mut s = spec(r, None, Some(0));
    s.tags = rand_tags(r, tags);
    let n = payload_len(r, linear).min(200);
    let mut f = s.build(&r.bytes(n));
    if r.one_in(5) {
        let o = s.ip_off() - 2;
        let et = r.pick(&NON_IP);
        f[o..o + 2].copy_from_slice(&et.to_be_bytes());
    }
    f
}

/// IPv4 and IPv6 fragments: first, middle and last.
pub fn fragment(r: &mut Rng, linear: usize) -> Vec<u8> {
    let (offset, more) = match r.below(3) {
        0 => (0, true),
        1 => (r.range(1, 8191) as u16, true),
        _ => (r.range(1, 8191) as u16, false),
    };
    let mut s = spec(r, None, None);
    match &mut s.ip {
        IpHeaders::Ipv4(h, _) => {
            h.dont_fragment = false;
            h.more_fragments = more;
            h.fragment_offset = IpFragOffset::try_new(offset).expect("offset");
        }
        IpHeaders::Ipv6(_, e) => {
            *e = if r.one_in(2) {
                rand_exts(r, Some((offset, more)))
            } else {
                Ipv6Extensions {
                    fragment: Some(frag_header(r, offset, more)),
                    ..Ipv6Extensions::default()
                }
            };
        }
    }
    let n = payload_len(r, linear).min(1400);
    s.build(&r.bytes(n))
}

pub fn non_ip(r: &mut Rng) -> Vec<u8> {
    let et = match r.below(10) {
        0..=6 => r.pick(&NON_IP),
        7 => r.below(0x600) as u16,
        _ => r.u16(),
    };
    let mut f = Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type: EtherType(et),
    }
    .to_bytes()
    .to_vec();
    f.extend(r.bytes_below(80));
    let n = few_tags(r);
    let tags = rand_tags(r, n);
    splice_tags(&mut f, &tags);
    f
}

pub fn random_bytes(r: &mut Rng, linear: usize) -> Vec<u8> {
    let n = if r.one_in(20) {
        r.range(14, linear)
    } else {
        r.range(14, 600)
    };
    let mut f = r.bytes(n);
    if r.one_in(2) {
        let et = r.pick(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x0806, 0x88e5]);
        f[12..14].copy_from_slice(&et.to_be_bytes());
        if r.one_in(2) && f.len() > 14 {
            f[14] = match et {
                0x0800 => 0x40 | r.range(5, 15) as u8,
                0x86dd => 0x60 | (f[14] & 0x0f),
                _ => f[14],
            };
        }
    }
    f
}
