//! Frame generation of the property test: the seeded generator, the
//! categories it reports, and the mix of generators (`build` for
//! well-formed frames, `mutate` for the rest). Every frame is a pure
//! function of the seed.

use std::collections::VecDeque;

use crate::{
    build::{ext_chain, payload_len, spec},
    mutate::{
        any_base, bad_ipv4, bad_ipv6, fragment, non_ip, random_bytes, short_length, vlan_nest,
    },
};

/// splitmix64: small, fast, and good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    pub fn u8(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }

    /// Fewer than `n` random bytes.
    pub fn bytes_below(&mut self, n: usize) -> Vec<u8> {
        let len = self.below(n);
        self.bytes(len)
    }
}

/// What kind of frame a generator made; the report counts per category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    WellFormed,
    Padded,
    Truncated,
    TruncationSweep,
    ShortLength,
    BadIpv4Header,
    BadIpv6Length,
    ExtChain,
    Vlan,
    Fragment,
    NonIp,
    ByteFlips,
    RandomBytes,
    MinSize,
    MaxSize,
    Oversize,
}

/// What BPF_PROG_TEST_RUN accepts for XDP on this kernel (probed).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Shortest frame accepted.
    pub min: usize,
    /// Longest frame the program sees whole (the linear part).
    pub linear: usize,
    /// Longest frame accepted (the rest goes into fragments).
    pub max: usize,
}

/// Generates frames; some generators queue several at once.
pub struct Gen {
    rng: Rng,
    limits: Limits,
    queue: VecDeque<(Category, Vec<u8>)>,
}

impl Gen {
    pub fn new(seed: u64, limits: Limits) -> Gen {
        Gen {
            rng: Rng::new(seed),
            limits,
            queue: VecDeque::new(),
        }
    }

    pub fn next(&mut self) -> (Category, Vec<u8>) {
        if let Some(f) = self.queue.pop_front() {
            return f;
        }
        let r = &mut self.rng;
        let linear = self.limits.linear;
        use Category::*;
        let (cat, frame) = match r.below(1000) {
            0..=119 => {
                let s = spec(r, None, None);
                let n = payload_len(r, linear);
                (WellFormed, s.build(&r.bytes(n)))
            }
            120..=159 => {
                let s = spec(r, None, None);
                let n = r.below(40);
                let mut f = s.build(&r.bytes(n));
                let pad = if f.len() < 60 && r.one_in(2) {
                    60 - f.len()
                } else {
                    r.range(1, 64)
                };
                f.extend(r.bytes(pad));
                (Padded, f)
            }
            160..=249 => {
                let f = any_base(r, linear);
                let cut = if r.one_in(3) {
                    r.below(f.len())
                } else {
                    r.below(f.len().min(100))
                };
                (Truncated, f[..cut].to_vec())
            }
            250..=251 => {
                let f = if r.one_in(3) {
                    ext_chain(r, false)
                } else {
                    spec(r, None, None).build(&r.bytes_below(8))
                };
                for cut in 0..=f.len() {
                    self.queue.push_back((TruncationSweep, f[..cut].to_vec()));
                }
                return self.next();
            }
            252..=311 => (ShortLength, short_length(r, linear)),
            312..=371 => (BadIpv4Header, bad_ipv4(r, linear)),
            372..=421 => (BadIpv6Length, bad_ipv6(r, linear)),
            422..=551 => {
                let big = r.one_in(10);
                (ExtChain, ext_chain(r, big))
            }
            552..=631 => (Vlan, vlan_nest(r, linear)),
            632..=711 => (Fragment, fragment(r, linear)),
            712..=761 => (NonIp, non_ip(r)),
            762..=881 => {
                let mut f = any_base(r, linear);
                for _ in 0..r.range(1, 4) {
                    let i = if r.one_in(2) {
                        r.below(f.len().min(128))
                    } else {
                        12 + r.below(f.len().min(120) - 12)
                    };
                    f[i] = if r.one_in(2) {
                        r.u8()
                    } else {
                        f[i] ^ (1 << r.below(8))
                    };
                }
                (ByteFlips, f)
            }
            882..=941 => (RandomBytes, random_bytes(r, linear)),
            942..=956 => {
                let n = r.below(21);
                let mut f = r.bytes(n);
                if n >= 14 {
                    let et = r.pick(&[0x0800u16, 0x86dd, 0x8100, 0x0806]);
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                }
                (MinSize, f)
            }
            957..=984 => {
                let s = spec(r, None, None);
                let head = s.build(&[]).len();
                let target = if r.one_in(2) {
                    linear
                } else {
                    linear - r.below(16)
                };
                let n = target - head;
                (MaxSize, s.build(&r.bytes(n)))
            }
            _ => {
                let s = spec(r, None, None);
                let target = if r.one_in(4) {
                    r.range(self.limits.max - 8, self.limits.max + 64)
                } else {
                    r.range(linear + 1, linear + 1500)
                };
                // IP lengths are 16 bits: the builder fills up to 60000
                // bytes; the rest is padding after the IP packet.
                let head = s.build(&[]).len();
                let n = target.min(60_000) - head;
                let mut f = s.build(&r.bytes(n));
                f.extend(r.bytes(target - f.len()));
                (Oversize, f)
            }
        };
        (cat, frame)
    }
}
