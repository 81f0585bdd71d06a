//! Learned baselines: exponentially weighted mean and variance per target.
//!
//! Each target keeps two EWMAs, packets/s and bits/s, updated once per
//! interval with weight `alpha = 1 - 2^(-dt / half_life)` (while the baseline
//! is young, the larger `dt / observed_seconds` is used, so early samples
//! form a plain running mean). An interval in which the target had no
//! traffic is an observation of zero; such gaps are applied in closed form
//! when the target is next seen, so idle targets cost nothing.
//!
//! The score is `(observed - mean) / max(stddev, min_stddev_fraction * mean,
//! 1)`: how many deviations above the baseline the observation is. The score
//! is computed against the baseline *before* it learns the observation, and
//! an observation over threshold is learned at a tenth of the normal weight,
//! so an attack does not teach the baseline that attacks are normal (a
//! permanent shift is absorbed after about ten half-lives).
//!
//! With the daily profile, each target also keeps one pair of EWMAs per UTC
//! hour of day; once an hour's bucket has seen `warmup_seconds` of traffic it
//! is used as the reference for that hour instead of the global one.

use super::bounded::Rank;

/// Learn weight applied to an observation that is over threshold.
pub const OVER_LEARN_FACTOR: f64 = 0.1;

/// Baseline settings, compiled from the configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineParams {
    /// Half-life of the EWMA, seconds.
    pub half_life_seconds: f64,
    /// Seconds a target must be observed before its baseline may fire.
    pub warmup_seconds: f64,
    /// Lower bound of the deviation as a fraction of the mean.
    pub min_stddev_fraction: f64,
    /// Score at which a warm baseline fires.
    pub min_score: f64,
    /// Keep one bucket per UTC hour of day.
    pub daily_profile: bool,
}

/// An exponentially weighted mean and variance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    /// Weighted mean.
    pub mean: f64,
    /// Weighted variance.
    pub var: f64,
    /// Seconds of observations folded in.
    pub seconds: f64,
}

impl Ewma {
    /// Folds in observation `x` covering `dt` seconds, scaled by `learn` (0..=1).
    pub fn update(&mut self, x: f64, dt: f64, half_life: f64, learn: f64) {
        if self.seconds <= 0.0 {
            self.mean = x;
            self.var = 0.0;
            self.seconds = dt;
            return;
        }
        let alpha = 1.0 - (-dt / half_life).exp2();
        let alpha = (alpha.max(dt / (self.seconds + dt)) * learn).clamp(0.0, 1.0);
        let diff = x - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
        self.seconds += dt;
    }

    /// Folds in `gap` seconds of zero observations (closed form of repeated
    /// updates with zero: `r = 2^(-gap/half_life)`, `mean' = r mean`,
    /// `var' = r (var + mean^2 (1 - r))`).
    pub fn decay(&mut self, gap: f64, half_life: f64) {
        if gap <= 0.0 || self.seconds <= 0.0 {
            return;
        }
        let r = (-gap / half_life).exp2();
        self.var = r * (self.var + self.mean * self.mean * (1.0 - r));
        self.mean *= r;
        self.seconds += gap;
    }

    /// Deviations of `x` above the mean.
    pub fn score(&self, x: f64, min_stddev_fraction: f64) -> f64 {
        let sd = self
            .var
            .max(0.0)
            .sqrt()
            .max(min_stddev_fraction * self.mean)
            .max(1.0);
        (x - self.mean) / sd
    }
}

/// How an observation compares with a target's baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// The warm-up has passed.
    pub warm: bool,
    /// Score of the packet rate.
    pub z_pps: f64,
    /// Score of the bit rate.
    pub z_bps: f64,
    /// Reference mean packet rate.
    pub mean_pps: f64,
    /// Reference mean bit rate.
    pub mean_bps: f64,
}

/// One observation of a target over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Interval start, monotonic ns.
    pub start_ns: u64,
    /// Interval end, monotonic ns.
    pub end_ns: u64,
    /// Interval length, seconds.
    pub dt: f64,
    /// UTC hour of day of the interval end.
    pub hour: usize,
    /// Packets per second.
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
}

/// The learned baseline of one (kind, target).
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pps: Ewma,
    bps: Ewma,
    first_ns: u64,
    last_ns: u64,
    daily: Option<Box<[[Ewma; 2]; 24]>>,
}

/// UTC hour of day of a Unix time in nanoseconds.
pub fn hour_of_day(unix_ns: u64) -> usize {
    ((unix_ns / 3_600_000_000_000) % 24) as usize
}

impl Baseline {
    /// A baseline first observed in the interval starting at `start_ns`.
    pub fn new(start_ns: u64, params: &BaselineParams) -> Baseline {
        Baseline {
            pps: Ewma::default(),
            bps: Ewma::default(),
            first_ns: start_ns,
            last_ns: start_ns,
            daily: params
                .daily_profile
                .then(|| Box::new([[Ewma::default(); 2]; 24])),
        }
    }

    /// The global packet-rate EWMA.
    pub fn pps(&self) -> &Ewma {
        &self.pps
    }

    /// The global bit-rate EWMA.
    pub fn bps(&self) -> &Ewma {
        &self.bps
    }

    /// Compares an observation with the baseline (before learning it).
    /// Idle time since the last update is folded in first.
    pub fn assess(&mut self, s: &Sample, params: &BaselineParams) -> Assessment {
        let (start_ns, end_ns, hour) = (s.start_ns, s.end_ns, s.hour);
        let gap = start_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.pps.decay(gap, params.half_life_seconds);
        self.bps.decay(gap, params.half_life_seconds);
        self.last_ns = self.last_ns.max(start_ns);
        let warm_global = end_ns.saturating_sub(self.first_ns) as f64 / 1e9
            >= params.warmup_seconds
            && self.pps.seconds > 0.0;
        let (rp, rb) = match self.daily.as_ref().and_then(|d| d.get(hour)) {
            Some([p, b]) if p.seconds >= params.warmup_seconds && params.warmup_seconds > 0.0 => {
                (*p, *b)
            }
            _ => (self.pps, self.bps),
        };
        Assessment {
            warm: warm_global,
            z_pps: rp.score(s.pps, params.min_stddev_fraction),
            z_bps: rb.score(s.bps, params.min_stddev_fraction),
            mean_pps: rp.mean,
            mean_bps: rb.mean,
        }
    }

    /// Learns an observation; `over` lowers its weight to
    /// [`OVER_LEARN_FACTOR`].
    pub fn learn(&mut self, s: &Sample, over: bool, params: &BaselineParams) {
        let (end_ns, dt, hour, pps, bps) = (s.end_ns, s.dt, s.hour, s.pps, s.bps);
        let learn = if over { OVER_LEARN_FACTOR } else { 1.0 };
        let hl = params.half_life_seconds;
        self.pps.update(pps, dt, hl, learn);
        self.bps.update(bps, dt, hl, learn);
        if let Some([p, b]) = self.daily.as_mut().and_then(|d| d.get_mut(hour)) {
            p.update(pps, dt, hl, learn);
            b.update(bps, dt, hl, learn);
        }
        self.last_ns = self.last_ns.max(end_ns);
    }
}

impl Rank for Baseline {
    /// Young (not yet warm-looking) baselines go first, then the least
    /// recently updated: a flood of new targets evicts its own kind before
    /// long-learned baselines.
    fn rank(&self) -> (u8, u64) {
        (u8::from(self.pps.seconds >= 60.0), self.last_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BaselineParams = BaselineParams {
        half_life_seconds: 60.0,
        warmup_seconds: 30.0,
        min_stddev_fraction: 0.1,
        min_score: 6.0,
        daily_profile: false,
    };

    fn sample(i: u64, hour: usize, pps: f64, bps: f64) -> Sample {
        let s = 1_000_000_000u64;
        Sample {
            start_ns: i * s,
            end_ns: (i + 1) * s,
            dt: 1.0,
            hour,
            pps,
            bps,
        }
    }

    #[test]
    fn ewma_tracks_level_and_noise() {
        let mut e = Ewma::default();
        for i in 0..600 {
            e.update(if i % 2 == 0 { 90.0 } else { 110.0 }, 1.0, 60.0, 1.0);
        }
        assert!((e.mean - 100.0).abs() < 2.0, "{}", e.mean);
        assert!((e.var.sqrt() - 10.0).abs() < 2.0, "{}", e.var);
        assert!(e.score(100.0, 0.1).abs() < 0.5);
        assert!(e.score(200.0, 0.1) > 6.0);
    }

    #[test]
    fn decay_matches_repeated_zero_updates() {
        let mut a = Ewma {
            mean: 50.0,
            var: 25.0,
            seconds: 1000.0,
        };
        let mut b = a;
        for _ in 0..40 {
            a.update(0.0, 1.0, 60.0, 1.0);
        }
        b.decay(40.0, 60.0);
        assert!((a.mean - b.mean).abs() < 1e-6 && (a.var - b.var).abs() < 1e-6);
    }

    #[test]
    fn warm_up_then_score() {
        let mut b = Baseline::new(0, &P);
        for i in 0..20u64 {
            let a = b.assess(&sample(i, 0, 100.0, 8e5), &P);
            assert!(!a.warm, "warm after {i} s");
            b.learn(&sample(i, 0, 100.0, 8e5), false, &P);
        }
        for i in 20..40u64 {
            b.assess(&sample(i, 0, 100.0, 8e5), &P);
            b.learn(&sample(i, 0, 100.0, 8e5), false, &P);
        }
        let a = b.assess(&sample(40, 0, 1000.0, 8e6), &P);
        assert!(a.warm && a.z_pps > 6.0 && a.z_bps > 6.0, "{a:?}");
        assert!((a.mean_pps - 100.0).abs() < 1.0);
    }

    #[test]
    fn daily_bucket_used_once_warm() {
        let p = BaselineParams {
            daily_profile: true,
            ..P
        };
        let mut b = Baseline::new(0, &p);
        for i in 0..100u64 {
            let hour = if i < 50 { 3 } else { 4 };
            let rate = if hour == 3 { 1000.0 } else { 10.0 };
            b.assess(&sample(i, hour, rate, rate), &p);
            b.learn(&sample(i, hour, rate, rate), false, &p);
        }
        let in3 = b.assess(&sample(100, 3, 1000.0, 1000.0), &p);
        assert!((in3.mean_pps - 1000.0).abs() < 1.0, "{in3:?}");
        let in5 = b.assess(&sample(101, 5, 1000.0, 1000.0), &p);
        assert!(in5.mean_pps < 1000.0 && in5.mean_pps > 10.0, "{in5:?}");
        assert_eq!(hour_of_day(3 * 3_600_000_000_000 + 5), 3);
    }
}
