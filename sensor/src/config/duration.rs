//! Human-friendly durations: `500ms`, `1s`, `2m`, `1h30m`, `1.5s`.

use std::time::Duration;

/// What the duration parser accepts, for error messages.
pub const DURATION_SYNTAX: &str =
    "a duration such as \"500ms\", \"1s\", \"2m\", \"1h30m\" or \"1.5s\" (units: ns, us, ms, s, m, h)";

/// Parses a duration made of one or more `<number><unit>` parts.
///
/// Numbers may have a fractional part; a bare number without a unit is
/// rejected so that `--interval 5` cannot mean 5 ns or 5 minutes by accident.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; expected {DURATION_SYNTAX}"));
    }
    let bad = || format!("{text:?} is not a duration; expected {DURATION_SYNTAX}");
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        total_ns += part_ns(num, unit_ns).ok_or_else(bad)?;
        rest = tail;
    }
    u64::try_from(total_ns)
        .map(Duration::from_nanos)
        .map_err(|_| format!("{text:?} is too long a duration"))
}

/// `num` (digits with at most one '.') times `unit_ns`, exactly where possible.
fn part_ns(num: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut ns = int_v.checked_mul(unit_ns)?;
    // Fraction: digits beyond nanosecond precision are truncated.
    let mut scale = unit_ns;
    for d in frac.chars() {
        scale /= 10;
        ns += u128::from(d.to_digit(10)?) * scale;
    }
    Some(ns)
}

/// Formats a duration the way [`parse_duration`] reads it (`1.5s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".to_string()
    } else if ns.is_multiple_of(60_000_000_000) && ns >= 60_000_000_000 {
        format!("{}m", ns / 60_000_000_000)
    } else if ns.is_multiple_of(1_000_000) && ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 250us "), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "s", "1x", "1.2.3s", "-1s", "1 s", "ms5", "."] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("duration"), "{bad}: {err}");
        }
        assert!(parse_duration("999999999999h").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["500ms", "1s", "2m", "1.5s", "15s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
