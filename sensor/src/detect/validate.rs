//! Validation of [`DetectConfig`]: every error names the dotted key and
//! the accepted values.

use super::cidr::Cidr;
use super::config::{DetectConfig, THRESHOLD_KINDS};
use super::sketch::{MAX_PRECISION, MIN_PRECISION};
use super::DetectError;

fn invalid(key: impl Into<String>, value: impl ToString, expected: &'static str) -> DetectError {
    DetectError::InvalidConfig {
        key: key.into(),
        value: value.to_string(),
        expected,
    }
}

fn rate(key: &str, v: f64) -> Result<(), DetectError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            format!("detection.{key}"),
            v,
            "a finite number >= 0",
        ))
    }
}

fn range_f(key: &str, v: f64, lo: f64, hi: f64, expected: &'static str) -> Result<(), DetectError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(format!("detection.{key}"), v, expected))
    }
}

fn range_u(
    key: &str,
    v: usize,
    lo: usize,
    hi: usize,
    expected: &'static str,
) -> Result<(), DetectError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(format!("detection.{key}"), v, expected))
    }
}

/// Parses a list of prefixes, naming the offending entry.
pub(crate) fn parse_cidrs(key: &str, list: &[String]) -> Result<Vec<Cidr>, DetectError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            Cidr::parse(s).ok_or_else(|| {
                invalid(
                    format!("detection.{key}[{i}]"),
                    format!("{s:?}"),
                    "an IPv4/IPv6 address or prefix such as 198.18.0.0/15 or 2001:db8::/32",
                )
            })
        })
        .collect()
}

impl DetectConfig {
    /// Checks every field; the error names the key and the accepted values.
    pub fn validate(&self) -> Result<(), DetectError> {
        range_u(
            "for_intervals",
            self.for_intervals as usize,
            1,
            3600,
            "an integer in 1..=3600",
        )?;
        range_f(
            "clear_seconds",
            self.clear_seconds,
            0.0,
            86_400.0,
            "seconds in 0..=86400",
        )?;
        range_u(
            "max_active",
            self.max_active,
            1,
            1_000_000,
            "an integer in 1..=1000000",
        )?;
        range_u(
            "max_tracked_sources",
            self.max_tracked_sources,
            1,
            16_777_216,
            "an integer in 1..=16777216",
        )?;
        range_u(
            "max_baselines",
            self.max_baselines,
            1,
            16_777_216,
            "an integer in 1..=16777216",
        )?;
        range_u(
            "top_targets",
            self.top_targets,
            0,
            1000,
            "an integer in 0..=1000",
        )?;
        range_u(
            "top_sources",
            self.top_sources,
            1,
            100,
            "an integer in 1..=100",
        )?;
        let p = usize::from(self.sketch_precision);
        range_u(
            "sketch_precision",
            p,
            MIN_PRECISION.into(),
            MAX_PRECISION.into(),
            "an integer in 4..=16",
        )?;
        parse_cidrs("allow_sources", &self.allow_sources)?;
        parse_cidrs("allow_destinations", &self.allow_destinations)?;
        let b = &self.baseline;
        range_f(
            "baseline.half_life_seconds",
            b.half_life_seconds,
            1.0,
            31_536_000.0,
            "seconds in 1..=31536000",
        )?;
        range_f(
            "baseline.warmup_seconds",
            b.warmup_seconds,
            0.0,
            31_536_000.0,
            "seconds in 0..=31536000",
        )?;
        range_f(
            "baseline.min_score",
            b.min_score,
            0.5,
            1000.0,
            "a number in 0.5..=1000",
        )?;
        range_f(
            "baseline.min_stddev_fraction",
            b.min_stddev_fraction,
            0.0,
            10.0,
            "a number in 0..=10",
        )?;
        rate("syn_flood.pps", self.syn_flood.pps)?;
        range_f(
            "syn_flood.min_half_open_ratio",
            self.syn_flood.min_half_open_ratio,
            0.0,
            1.0,
            "a fraction in 0..=1",
        )?;
        rate(
            "syn_flood.baseline_min_pps",
            self.syn_flood.baseline_min_pps,
        )?;
        rate("udp_flood.pps", self.udp_flood.pps)?;
        rate("udp_flood.bps", self.udp_flood.bps)?;
        rate(
            "udp_flood.baseline_min_pps",
            self.udp_flood.baseline_min_pps,
        )?;
        rate("icmp_flood.pps", self.icmp_flood.pps)?;
        rate("icmp_flood.bps", self.icmp_flood.bps)?;
        rate(
            "icmp_flood.baseline_min_pps",
            self.icmp_flood.baseline_min_pps,
        )?;
        range_f(
            "port_scan.window_seconds",
            self.port_scan.window_seconds,
            1.0,
            3600.0,
            "seconds in 1..=3600",
        )?;
        range_u(
            "port_scan.min_ports",
            self.port_scan.min_ports,
            2,
            4096,
            "an integer in 2..=4096",
        )?;
        range_f(
            "host_sweep.window_seconds",
            self.host_sweep.window_seconds,
            1.0,
            3600.0,
            "seconds in 1..=3600",
        )?;
        range_u(
            "host_sweep.min_hosts",
            self.host_sweep.min_hosts,
            2,
            4096,
            "an integer in 2..=4096",
        )?;
        rate("traffic_spike.min_pps", self.traffic_spike.min_pps)?;
        rate("traffic_spike.min_bps", self.traffic_spike.min_bps)?;
        rate("outbound_spike.min_bps", self.outbound_spike.min_bps)?;
        rate("flow_table_flood.pps", self.flow_table_flood.pps)?;
        for (i, t) in self.thresholds.iter().enumerate() {
            parse_cidrs(
                &format!("thresholds[{i}].cidr"),
                std::slice::from_ref(&t.cidr),
            )?;
            if !THRESHOLD_KINDS.contains(&t.kind) {
                return Err(invalid(
                    format!("detection.thresholds[{i}].kind"),
                    t.kind,
                    "one of syn_flood, udp_flood, icmp_flood, traffic_spike, outbound_spike",
                ));
            }
            rate(&format!("thresholds[{i}].pps"), t.pps)?;
            rate(&format!("thresholds[{i}].bps"), t.bps)?;
            if t.pps == 0.0 && t.bps == 0.0 {
                return Err(invalid(
                    format!("detection.thresholds[{i}]"),
                    "pps = 0, bps = 0",
                    "at least one of pps or bps above 0",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::config::{StaticThreshold, UdpFloodConfig};
    use crate::detect::Kind;

    #[test]
    fn empty_table_is_default_and_valid() {
        let c: DetectConfig = toml::from_str("").expect("parses");
        assert_eq!(c, DetectConfig::default());
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn partial_tables_keep_kind_defaults() {
        let c: DetectConfig = toml::from_str(
            "for_intervals = 3\n[icmp_flood]\nbps = 1e6\n[[thresholds]]\ncidr = \"198.18.0.0/24\"\nkind = \"udp_flood\"\npps = 50000\n",
        )
        .expect("parses");
        assert_eq!(c.for_intervals, 3);
        assert_eq!(c.icmp_flood.pps, 5000.0);
        assert_eq!(c.icmp_flood.bps, 1e6);
        assert_eq!(c.thresholds[0].kind, Kind::UdpFlood);
        c.validate().expect("valid");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert!(toml::from_str::<DetectConfig>("for_interval = 3").is_err());
        assert!(toml::from_str::<DetectConfig>("[syn_flood]\nppps = 3").is_err());
        assert!(toml::from_str::<DetectConfig>("direction = \"sideways\"").is_err());
        let cases: Vec<(DetectConfig, &str)> = vec![
            (
                DetectConfig {
                    for_intervals: 0,
                    ..Default::default()
                },
                "detection.for_intervals",
            ),
            (
                DetectConfig {
                    sketch_precision: 20,
                    ..Default::default()
                },
                "detection.sketch_precision",
            ),
            (
                DetectConfig {
                    allow_sources: vec!["10.0.0.0/40".into()],
                    ..Default::default()
                },
                "detection.allow_sources[0]",
            ),
            (
                DetectConfig {
                    thresholds: vec![StaticThreshold {
                        cidr: "10.0.0.0/8".into(),
                        kind: Kind::PortScan,
                        pps: 1.0,
                        bps: 0.0,
                    }],
                    ..Default::default()
                },
                "detection.thresholds[0].kind",
            ),
            (
                DetectConfig {
                    thresholds: vec![StaticThreshold {
                        cidr: "10.0.0.0/8".into(),
                        kind: Kind::UdpFlood,
                        pps: 0.0,
                        bps: 0.0,
                    }],
                    ..Default::default()
                },
                "detection.thresholds[0]",
            ),
            (
                DetectConfig {
                    udp_flood: UdpFloodConfig {
                        pps: f64::NAN,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "detection.udp_flood.pps",
            ),
        ];
        for (c, want) in cases {
            match c.validate() {
                Err(DetectError::InvalidConfig { key, .. }) => assert_eq!(key, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
