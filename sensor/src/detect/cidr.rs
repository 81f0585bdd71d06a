//! Address prefixes for allowlists and static thresholds.
//!
//! Prefixes are kept in the kernel's 16-byte form (IPv4 v4-mapped), so a
//! flow key's address bytes are matched without conversion.

use std::net::IpAddr;

use crate::model::addr_bytes;

/// One prefix, e.g. `198.18.0.0/15` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    /// Network address (host bits cleared), v4-mapped for IPv4.
    addr: [u8; 16],
    /// Prefix length over the 16-byte form (IPv4 `/n` is `96 + n`).
    bits: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address (a host prefix). Host bits are
    /// cleared. Returns `None` when the text is not a prefix.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, len) = match text.trim().split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let bits = match (ip, len) {
            (IpAddr::V4(_), Some(n)) if n <= 32 => 96 + n,
            (IpAddr::V6(_), Some(n)) if n <= 128 => n,
            (IpAddr::V4(_), None) | (IpAddr::V6(_), None) => 128,
            _ => return None,
        };
        let mut addr = addr_bytes(ip);
        for (i, byte) in addr.iter_mut().enumerate() {
            let keep = (u32::from(bits)).saturating_sub(i as u32 * 8).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            *byte &= mask;
        }
        Some(Cidr { addr, bits })
    }

    /// Prefix length over the 16-byte form (longer is more specific).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// True when `addr` (16-byte form) lies in the prefix.
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let full = usize::from(self.bits / 8);
        if addr[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.bits % 8;
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        addr[full] & mask == self.addr[full]
    }

    /// True when `ip` lies in the prefix.
    #[cfg(test)]
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(&addr_bytes(ip))
    }
}

/// A list of prefixes; matching is a linear scan (lists are short).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CidrSet(pub Vec<Cidr>);

impl CidrSet {
    /// True when any prefix contains `addr`.
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        self.0.iter().any(|c| c.contains(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::v4;

    #[test]
    fn v4_and_v6_prefixes() {
        let c = Cidr::parse("198.18.0.0/15").expect("valid");
        assert!(c.contains(&v4(198, 19, 255, 1)));
        assert!(!c.contains(&v4(198, 20, 0, 1)));
        let h = Cidr::parse("198.18.0.7").expect("valid");
        assert!(h.contains(&v4(198, 18, 0, 7)) && !h.contains(&v4(198, 18, 0, 8)));
        let s = Cidr::parse("2001:db8::1/32").expect("valid");
        assert!(s.contains_ip("2001:db8:ffff::9".parse().expect("ip")));
        assert!(!s.contains(&v4(198, 18, 0, 7)));
        let odd = Cidr::parse("10.0.0.0/9").expect("valid");
        assert!(odd.contains(&v4(10, 127, 1, 1)) && !odd.contains(&v4(10, 128, 0, 0)));
        assert_eq!(Cidr::parse("0.0.0.0/0").expect("valid").bits(), 96);
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
