//! A small streaming reader of pcap and pcapng captures.
//!
//! Classic pcap: both byte orders, microsecond (`a1b2c3d4`) and nanosecond
//! (`a1b23c4d`) magic. pcapng: section headers (either byte order, several
//! sections), interface descriptions (`if_name`, `if_tsresol`), enhanced
//! and simple packet blocks (`epb_flags` gives the direction); other blocks
//! are skipped. Link types: Ethernet, Linux cooked v1 and v2 (`tcpdump -i
//! any`; the packet type gives the direction) and raw IP; cooked and raw
//! frames get a synthetic 14-byte Ethernet header, so every frame reaches
//! the parser as the kernel would see it, with the wire length adjusted to
//! match.
//!
//! Memory is one record buffer (grown to the largest record) and a read
//! buffer, whatever the file size. Every error names the byte offset of the
//! record or block at fault.

use std::io::{self, Read};

use sensor_common::Direction;

/// Largest record or block accepted: far above any real snap length
/// (tcpdump and Wireshark use 256 KiB), low enough that a corrupt length
/// field cannot make the reader allocate gigabytes.
pub const MAX_RECORD: u32 = 16 * 1024 * 1024;
/// Bytes reserved in front of every frame for a synthetic Ethernet header.
const ETH_HDR: usize = 14;

const PCAP_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_NANO: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const BLOCK_IDB: u32 = 1;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;

/// Errors of the capture reader; each names the byte offset at fault.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the file failed.
    #[error("reading the capture at byte offset {offset}: {source}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file starts with neither pcap nor pcapng magic.
    #[error("not a pcap or pcapng file: magic {magic:#010x} at byte offset 0; record with tcpdump -w or convert with editcap")]
    NotACapture {
        /// The first four bytes.
        magic: u32,
    },
    /// The file ends inside a header, record or block.
    #[error("capture truncated at byte offset {offset}: the {what} needs {need} bytes, only {have} left; the file was cut off (still being written, or copied partially)")]
    Truncated {
        /// Start of the header, record or block.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes it needs.
        need: u64,
        /// Bytes the file still had.
        have: u64,
    },
    /// A length field is impossible; the file is corrupt from here on.
    #[error("corrupt capture at byte offset {offset}: {what} is {value}, {rule}; the file is damaged from here on (try `pcapfix` or `editcap` to salvage the rest)")]
    BadLength {
        /// Start of the record or block.
        offset: u64,
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        rule: &'static str,
    },
    /// A link type this reader does not decode.
    #[error("unsupported link type {link_type} at byte offset {offset}: supported are Ethernet (1), Linux cooked (113, 276) and raw IP (101, 228, 229); record on an Ethernet interface or convert with tcprewrite")]
    LinkType {
        /// The header or interface block declaring it.
        offset: u64,
        /// The LINKTYPE_ value.
        link_type: u32,
    },
    /// A packet block names an interface no block described.
    #[error("corrupt capture at byte offset {offset}: packet of interface {id}, but only {known} interfaces were described")]
    UnknownInterface {
        /// Start of the packet block.
        offset: u64,
        /// Interface id in the block.
        id: u32,
        /// Interfaces described in the section.
        known: usize,
    },
}

/// How frames of an interface are encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): 16-byte cooked header.
    Sll,
    /// LINKTYPE_LINUX_SLL2 (276): 20-byte cooked header.
    Sll2,
    /// LINKTYPE_RAW (101), IPV4 (228), IPV6 (229): a bare IP packet.
    RawIp,
}

impl Link {
    fn of(link_type: u32, offset: u64) -> Result<Link, CaptureError> {
        match link_type & 0xffff {
            1 => Ok(Link::Ethernet),
            113 => Ok(Link::Sll),
            276 => Ok(Link::Sll2),
            101 | 228 | 229 => Ok(Link::RawIp),
            _ => Err(CaptureError::LinkType { offset, link_type }),
        }
    }
}

/// One interface of the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureIface {
    /// Encapsulation of its frames.
    pub link: Link,
    /// `if_name`, when the capture names it.
    pub name: Option<String>,
    /// Timestamp units per second, as (power of 10 or 2, exponent).
    tsresol: (bool, u8),
}

/// One captured frame, Ethernet-framed.
#[derive(Debug)]
pub struct Packet<'a> {
    /// Unix time in ns.
    pub ts_ns: u64,
    /// Index of its interface in [`CaptureReader::ifaces`].
    pub iface: usize,
    /// Captured bytes, starting with an Ethernet header.
    pub data: &'a [u8],
    /// Length of the frame on the wire (at least `data.len()`).
    pub wire_len: u64,
    /// Direction, when the capture records it.
    pub direction: Option<Direction>,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// The interface's `if_name`, when the capture names it.
    pub iface_name: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pcap { big: bool, nanos: bool },
    Pcapng { big: bool },
}

/// Streams packets out of a pcap or pcapng file.
pub struct CaptureReader<R: Read> {
    r: R,
    offset: u64,
    format: Format,
    ifaces: Vec<CaptureIface>,
    /// Index in `ifaces` of the current pcapng section's interface 0.
    section_base: usize,
    buf: Vec<u8>,
    last_ts_ns: u64,
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or first section header (pcapng).
    pub fn new(r: R) -> Result<CaptureReader<R>, CaptureError> {
        let mut c = CaptureReader {
            r,
            offset: 0,
            format: Format::Pcap {
                big: false,
                nanos: false,
            },
            ifaces: Vec::new(),
            section_base: 0,
            buf: Vec::new(),
            last_ts_ns: 0,
        };
        let mut head = [0u8; 24];
        c.exact(&mut head, 0, "file header")?;
        let le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if le == PCAPNG_SHB {
            c.section(&head, 0)?;
            return Ok(c);
        }
        let (big, nanos) = match (le, be) {
            (PCAP_MICRO, _) => (false, false),
            (PCAP_NANO, _) => (false, true),
            (_, PCAP_MICRO) => (true, false),
            (_, PCAP_NANO) => (true, true),
            _ => return Err(CaptureError::NotACapture { magic: be }),
        };
        c.format = Format::Pcap { big, nanos };
        let link_type = u32_at(&head, 20, big);
        c.ifaces.push(CaptureIface {
            link: Link::of(link_type, 0)?,
            name: None,
            tsresol: (true, if nanos { 9 } else { 6 }),
        });
        Ok(c)
    }

    /// Interfaces described so far (pcap: one).
    pub fn ifaces(&self) -> &[CaptureIface] {
        &self.ifaces
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.format {
            Format::Pcap { big, nanos } => self.pcap_record(big, nanos),
            Format::Pcapng { .. } => self.pcapng_packet(),
        }
    }

    fn pcap_record(&mut self, big: bool, nanos: bool) -> Result<Option<Packet<'_>>, CaptureError> {
        let start = self.offset;
        let mut h = [0u8; 16];
        if self.fill(&mut h)? == 0 {
            return Ok(None);
        }
        let got = (self.offset - start) as usize;
        if got < 16 {
            return Err(truncated(start, "record header", 16, got as u64));
        }
        let (sec, frac) = (u32_at(&h, 0, big), u32_at(&h, 4, big));
        let (incl, orig) = (u32_at(&h, 8, big), u32_at(&h, 12, big));
        if incl > MAX_RECORD {
            return Err(CaptureError::BadLength {
                offset: start,
                what: "the record's captured length",
                value: incl.into(),
                rule: "larger than any snap length (16 MiB at most)",
            });
        }
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let ts_ns = u64::from(sec) * 1_000_000_000 + frac_ns;
        self.read_data(incl as usize, start, 16, "record data")?;
        Ok(Some(self.frame(
            0,
            ts_ns,
            incl as usize,
            orig.max(incl),
            None,
            start,
        )))
    }

    fn pcapng_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        loop {
            let start = self.offset;
            let mut h = [0u8; 8];
            let n = self.fill(&mut h)?;
            if n == 0 {
                return Ok(None);
            }
            if n < 8 {
                return Err(truncated(start, "block header", 8, n as u64));
            }
            let Format::Pcapng { big } = self.format else {
                unreachable!("pcapng blocks in a pcap file")
            };
            let le_type = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if le_type == PCAPNG_SHB {
                let mut head = [0u8; 24];
                head[..8].copy_from_slice(&h);
                self.exact(&mut head[8..], start, "section header")?;
                self.section(&head, start)?;
                continue;
            }
            let btype = u32_at(&h, 0, big);
            let blen = u32_at(&h, 4, big);
            if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_RECORD {
                return Err(CaptureError::BadLength {
                    offset: start,
                    what: "the block's total length",
                    value: blen.into(),
                    rule: "it must be a multiple of 4 from 12 to 16 MiB",
                });
            }
            let body = blen as usize - 12;
            self.read_data(body + 4, start, 8, "block")?;
            let trailer = u32_at(&self.buf[ETH_HDR + body..], 0, big);
            if trailer != blen {
                return Err(CaptureError::BadLength {
                    offset: start,
                    what: "the block's trailing length",
                    value: trailer.into(),
                    rule: "it must repeat the leading total length",
                });
            }
            match btype {
                BLOCK_IDB => self.idb(body, big, start)?,
                BLOCK_EPB => return self.epb(body, big, start).map(Some),
                BLOCK_SPB => return self.spb(body, big, start).map(Some),
                _ => {}
            }
        }
    }

    /// Parses a section header block whose first 24 bytes are `head`.
    fn section(&mut self, head: &[u8; 24], start: u64) -> Result<(), CaptureError> {
        let bom_le = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let big = match bom_le {
            PCAPNG_BOM => false,
            _ if u32::from_be_bytes([head[8], head[9], head[10], head[11]]) == PCAPNG_BOM => true,
            _ => {
                return Err(CaptureError::BadLength {
                    offset: start,
                    what: "the section's byte-order magic",
                    value: bom_le.into(),
                    rule: "it must be 0x1a2b3c4d in either byte order",
                })
            }
        };
        let blen = u32_at(head, 4, big);
        if blen < 28 || !blen.is_multiple_of(4) || blen > MAX_RECORD {
            return Err(CaptureError::BadLength {
                offset: start,
                what: "the section header's total length",
                value: blen.into(),
                rule: "it must be a multiple of 4 from 28 to 16 MiB",
            });
        }
        // Skip the rest (section length, options, trailer).
        let rest = blen as usize - 24;
        self.read_data(rest, start, 24, "section header")?;
        self.format = Format::Pcapng { big };
        self.section_base = self.ifaces.len();
        Ok(())
    }

    fn body(&self, body: usize) -> &[u8] {
        &self.buf[ETH_HDR..ETH_HDR + body]
    }

    fn idb(&mut self, body: usize, big: bool, start: u64) -> Result<(), CaptureError> {
        if body < 8 {
            return Err(short_block(start, "interface description", body));
        }
        let b = self.body(body);
        let link_type = u32::from(u16_at(b, 0, big));
        let mut iface = CaptureIface {
            link: Link::of(link_type, start)?,
            name: None,
            tsresol: (true, 6),
        };
        for (code, value) in options(&b[8..], big) {
            match code {
                2 => {
                    iface.name = Some(String::from_utf8_lossy(value).trim_end_matches('\0').into())
                }
                9 if !value.is_empty() => {
                    iface.tsresol = (value[0] & 0x80 == 0, value[0] & 0x7f);
                }
                _ => {}
            }
        }
        self.ifaces.push(iface);
        Ok(())
    }

    fn iface_index(&self, id: u32, start: u64) -> Result<usize, CaptureError> {
        let idx = self.section_base + id as usize;
        if idx >= self.ifaces.len() {
            return Err(CaptureError::UnknownInterface {
                offset: start,
                id,
                known: self.ifaces.len() - self.section_base,
            });
        }
        Ok(idx)
    }

    fn epb(&mut self, body: usize, big: bool, start: u64) -> Result<Packet<'_>, CaptureError> {
        if body < 20 {
            return Err(short_block(start, "enhanced packet", body));
        }
        let b = self.body(body);
        let (id, hi, lo) = (u32_at(b, 0, big), u32_at(b, 4, big), u32_at(b, 8, big));
        let (cap, orig) = (u32_at(b, 12, big) as usize, u32_at(b, 16, big));
        if cap > body - 20 {
            return Err(CaptureError::BadLength {
                offset: start,
                what: "the packet's captured length",
                value: cap as u64,
                rule: "larger than its block",
            });
        }
        let padded = (cap + 3) & !3;
        let mut direction = None;
        if body >= 20 + padded {
            for (code, value) in options(&b[20 + padded..], big) {
                if code == 2 && value.len() >= 4 {
                    direction = match u32_at(value, 0, big) & 3 {
                        1 => Some(Direction::Ingress),
                        2 => Some(Direction::Egress),
                        _ => None,
                    };
                }
            }
        }
        let idx = self.iface_index(id, start)?;
        let ts = (u64::from(hi) << 32) | u64::from(lo);
        let ts_ns = to_ns(ts, self.ifaces[idx].tsresol);
        // Move the frame to the front of the body so it follows the
        // reserved header room directly.
        self.buf
            .copy_within(ETH_HDR + 20..ETH_HDR + 20 + cap, ETH_HDR);
        let wire = orig.max(cap as u32);
        Ok(self.frame(idx, ts_ns, cap, wire, direction, start))
    }

    fn spb(&mut self, body: usize, big: bool, start: u64) -> Result<Packet<'_>, CaptureError> {
        if body < 4 {
            return Err(short_block(start, "simple packet", body));
        }
        let orig = u32_at(self.body(body), 0, big);
        let cap = (orig as usize).min(body - 4);
        let idx = self.iface_index(0, start)?;
        self.buf
            .copy_within(ETH_HDR + 4..ETH_HDR + 4 + cap, ETH_HDR);
        let ts = self.last_ts_ns;
        Ok(self.frame(idx, ts, cap, orig.max(cap as u32), None, start))
    }

    /// Turns `cap` bytes at `buf[ETH_HDR..]` into an Ethernet frame.
    fn frame(
        &mut self,
        iface: usize,
        ts_ns: u64,
        cap: usize,
        wire: u32,
        mut direction: Option<Direction>,
        offset: u64,
    ) -> Packet<'_> {
        self.last_ts_ns = ts_ns;
        let raw = ETH_HDR..ETH_HDR + cap;
        let (hdr, proto) = match self.ifaces[iface].link {
            Link::Ethernet => (0, None),
            Link::Sll if cap >= 16 => {
                let b = &self.buf[raw.clone()];
                if direction.is_none() {
                    direction = Some(pkttype_direction(u16::from_be_bytes([b[0], b[1]])));
                }
                (16, Some([b[14], b[15]]))
            }
            Link::Sll2 if cap >= 20 => {
                let b = &self.buf[raw.clone()];
                if direction.is_none() {
                    direction = Some(pkttype_direction(u16::from(b[10])));
                }
                (20, Some([b[0], b[1]]))
            }
            Link::RawIp => {
                let v = self.buf.get(ETH_HDR).map(|b| b >> 4).unwrap_or(0);
                let et: u16 = if v == 6 { 0x86dd } else { 0x0800 };
                (0, Some(et.to_be_bytes()))
            }
            // A cooked header cut short: pass the bytes as they are.
            Link::Sll | Link::Sll2 => (0, None),
        };
        let (from, wire_len) = match proto {
            None => (ETH_HDR, u64::from(wire)),
            Some(p) => {
                // Synthetic Ethernet header right before the payload.
                let at = ETH_HDR + hdr - ETH_HDR;
                self.buf[at..at + 12].fill(0);
                self.buf[at + 12..at + 14].copy_from_slice(&p);
                (at, u64::from(wire) + ETH_HDR as u64 - hdr as u64)
            }
        };
        let this = &*self;
        Packet {
            ts_ns,
            iface,
            data: &this.buf[from..ETH_HDR + cap],
            wire_len,
            direction,
            offset,
            iface_name: this.ifaces[iface].name.as_deref(),
        }
    }

    /// Reads `n` bytes into `buf[ETH_HDR..]`; `start` and `header` locate
    /// the record for the error.
    fn read_data(
        &mut self,
        n: usize,
        start: u64,
        header: u64,
        what: &'static str,
    ) -> Result<(), CaptureError> {
        if self.buf.len() < ETH_HDR + n {
            self.buf.resize(ETH_HDR + n, 0);
        }
        let mut tmp = std::mem::take(&mut self.buf);
        let got = self.fill(&mut tmp[ETH_HDR..ETH_HDR + n]);
        self.buf = tmp;
        let got = got?;
        if got < n {
            return Err(truncated(
                start,
                what,
                header + n as u64,
                header + got as u64,
            ));
        }
        Ok(())
    }

    fn exact(&mut self, b: &mut [u8], start: u64, what: &'static str) -> Result<(), CaptureError> {
        let n = self.fill(b)?;
        if n < b.len() {
            return Err(truncated(start, what, b.len() as u64, n as u64));
        }
        Ok(())
    }

    /// Reads until `b` is full or the file ends; returns the bytes read.
    fn fill(&mut self, b: &mut [u8]) -> Result<usize, CaptureError> {
        let mut got = 0;
        while got < b.len() {
            match self.r.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        offset: self.offset + got as u64,
                        source,
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }
}

/// PACKET_OUTGOING (4) is egress; every other packet type was received.
fn pkttype_direction(t: u16) -> Direction {
    if t == 4 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

fn truncated(offset: u64, what: &'static str, need: u64, have: u64) -> CaptureError {
    CaptureError::Truncated {
        offset,
        what,
        need,
        have,
    }
}

fn short_block(offset: u64, what: &'static str, body: usize) -> CaptureError {
    CaptureError::BadLength {
        offset,
        what,
        value: body as u64 + 12,
        rule: "too short for its fixed fields",
    }
}

fn u32_at(b: &[u8], off: usize, big: bool) -> u32 {
    let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn u16_at(b: &[u8], off: usize, big: bool) -> u16 {
    let a = [b[off], b[off + 1]];
    if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

/// pcapng options as (code, value) until `opt_endofopt` or the end.
fn options(mut b: &[u8], big: bool) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let code = u16_at(b, 0, big);
        let len = u16_at(b, 2, big) as usize;
        if code == 0 || 4 + len > b.len() {
            break;
        }
        out.push((code, &b[4..4 + len]));
        let step = 4 + ((len + 3) & !3);
        b = &b[step.min(b.len())..];
    }
    out
}

/// Timestamp units to ns: `(decimal, exp)` means units of 10^-exp or 2^-exp s.
fn to_ns(ts: u64, (decimal, exp): (bool, u8)) -> u64 {
    let ns = if decimal {
        if exp <= 9 {
            u128::from(ts) * 10u128.pow(u32::from(9 - exp))
        } else {
            u128::from(ts) / 10u128.pow(u32::from(exp - 9).min(38))
        }
    } else {
        (u128::from(ts) * 1_000_000_000) >> exp.min(127)
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, nanos: bool, link: u32, frames: &[(u64, &[u8])]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let mut v = Vec::new();
        w32(&mut v, if nanos { PCAP_NANO } else { PCAP_MICRO });
        v.extend_from_slice(&if big { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        for x in [0, 0, 65535, link] {
            w32(&mut v, x);
        }
        for (ts, f) in frames {
            w32(&mut v, (ts / 1_000_000_000) as u32);
            let frac = ts % 1_000_000_000;
            w32(&mut v, if nanos { frac } else { frac / 1000 } as u32);
            w32(&mut v, f.len() as u32);
            w32(&mut v, f.len() as u32);
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn reads_pcap_in_both_byte_orders_and_resolutions() {
        let f1 = [1u8; 60];
        let f2 = [2u8; 70];
        for big in [false, true] {
            for nanos in [false, true] {
                let file = pcap(
                    big,
                    nanos,
                    1,
                    &[
                        (1_500_000_123_456_789, &f1),
                        (1_500_000_124_000_001_000, &f2),
                    ],
                );
                let mut r = CaptureReader::new(&file[..]).expect("header");
                let p = r.next_packet().expect("read").expect("packet");
                let want = if nanos {
                    1_500_000_123_456_789
                } else {
                    1_500_000_123_456_000
                };
                assert_eq!(
                    (p.ts_ns, p.data.len(), p.wire_len, p.offset),
                    (want, 60, 60, 24)
                );
                let p = r.next_packet().expect("read").expect("packet");
                assert_eq!((p.data[0], p.wire_len, p.offset), (2, 70, 24 + 16 + 60));
                assert!(r.next_packet().expect("eof").is_none());
            }
        }
    }

    #[test]
    fn truncated_and_corrupt_records_name_their_offset() {
        let f = [0u8; 60];
        let file = pcap(false, false, 1, &[(0, &f), (0, &f)]);
        let cut = &file[..file.len() - 10];
        let mut r = CaptureReader::new(cut).expect("header");
        assert!(r.next_packet().expect("first").is_some());
        match r.next_packet() {
            Err(CaptureError::Truncated { offset, .. }) => assert_eq!(offset, 100),
            other => panic!("expected truncation, got {other:?}"),
        }
        let mut bad = file.clone();
        bad[100 + 8..100 + 12].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let mut r = CaptureReader::new(&bad[..]).expect("header");
        assert!(r.next_packet().expect("first").is_some());
        let e = r.next_packet().expect_err("corrupt");
        assert!(e.to_string().contains("byte offset 100"), "{e}");
        assert!(matches!(
            CaptureReader::new(&[0u8; 30][..]),
            Err(CaptureError::NotACapture { .. })
        ));
    }

    #[test]
    fn cooked_frames_get_an_ethernet_header_and_direction() {
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6];
        sll2.extend_from_slice(&[0u8; 8]);
        sll2.extend_from_slice(&[0x45; 20]);
        let file = pcap(false, true, 276, &[(5, &sll2)]);
        let mut r = CaptureReader::new(&file[..]).expect("header");
        let p = r.next_packet().expect("read").expect("packet");
        assert_eq!(p.data.len(), 34);
        assert_eq!(&p.data[12..15], &[0x08, 0x00, 0x45]);
        assert_eq!((p.wire_len, p.direction), (34, Some(Direction::Egress)));
    }

    #[test]
    fn reads_pcapng_sections_interfaces_and_flags() {
        let mut v = Vec::new();
        let block = |v: &mut Vec<u8>, t: u32, body: &[u8]| {
            let len = 12 + body.len() as u32;
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(body);
            v.extend_from_slice(&len.to_le_bytes());
        };
        let mut shb = PCAPNG_BOM.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        block(&mut v, PCAPNG_SHB, &shb);
        let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
        idb.extend_from_slice(&[2, 0, 3, 0, b'e', b't', b'h', 0]);
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut v, BLOCK_IDB, &idb);
        let mut epb = Vec::new();
        let ts: u64 = 1_000_000_000_123;
        for x in [0u32, (ts >> 32) as u32, ts as u32, 62, 64] {
            epb.extend_from_slice(&x.to_le_bytes());
        }
        epb.extend_from_slice(&[7u8; 62]);
        epb.extend_from_slice(&[0, 0]);
        epb.extend_from_slice(&[2, 0, 4, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut v, BLOCK_EPB, &epb);
        block(&mut v, 0x0bad, &[0u8; 8]);
        let mut spb = 60u32.to_le_bytes().to_vec();
        spb.extend_from_slice(&[9u8; 60]);
        block(&mut v, BLOCK_SPB, &spb);
        let mut r = CaptureReader::new(&v[..]).expect("shb");
        let p = r.next_packet().expect("read").expect("epb");
        assert_eq!((p.ts_ns, p.data.len(), p.wire_len), (ts, 62, 64));
        assert_eq!((p.data[0], p.direction), (7, Some(Direction::Egress)));
        let p = r.next_packet().expect("read").expect("spb");
        assert_eq!((p.ts_ns, p.data.len(), p.data[0]), (ts, 60, 9));
        assert!(r.next_packet().expect("eof").is_none());
        assert_eq!(r.ifaces()[0].name.as_deref(), Some("eth"));
    }
}
