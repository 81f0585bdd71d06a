//! Flow records: why a flow ended and its one-line JSON form.

use sensor_common::{tcp_flags, FlowKey, FlowValue};
use serde::Serialize;

use crate::model::FlowKeyExt as _;

/// Why a flow record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// Active longer than the active timeout; the flow continues.
    Active,
    /// Removed to make room for a new flow in a full table.
    Evicted,
    /// The agent is shutting down.
    Shutdown,
}

impl EndReason {
    /// Every reason, in label order.
    pub const ALL: [EndReason; 4] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::Evicted,
        EndReason::Shutdown,
    ];

    /// Label used in records and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// One ended flow (or one active-timeout slice of a long flow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The flow.
    pub key: FlowKey,
    /// Counts since the flow started or since its previous record; the
    /// timestamps bound its first and last packet (CLOCK_MONOTONIC ns).
    pub value: FlowValue,
    /// Why it was written.
    pub reason: EndReason,
    /// Interface name, when the interval totals named it.
    pub iface: Option<String>,
    /// Wall-clock time of `value.first_seen_ns` (Unix ns).
    pub start_unix_ns: u64,
    /// Wall-clock time of `value.last_seen_ns` (Unix ns).
    pub end_unix_ns: u64,
}

/// The JSON shape of a record; field order is the output order.
#[derive(Serialize)]
struct Json<'a> {
    start: String,
    end: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iface: Option<&'a str>,
    ifindex: u32,
    direction: &'static str,
    vlan: u16,
    ip_version: u8,
    protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<&'static str>,
    src_addr: String,
    dst_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u16>,
    fragment: bool,
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syn_ack: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fin: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rst: Option<u64>,
    reason: &'static str,
}

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// Name of an IP protocol number the parser knows.
pub fn protocol_name(protocol: u8) -> Option<&'static str> {
    match protocol {
        PROTO_ICMP => Some("icmp"),
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMPV6 => Some("icmpv6"),
        PROTO_SCTP => Some("sctp"),
        _ => None,
    }
}

/// TCP flags as letters in bit order, nfdump style without dots: FIN `F`,
/// SYN `S`, RST `R`, PSH `P`, ACK `A`, URG `U`, ECE `E`, CWR `C`.
/// SYN+ACK is `"SA"`; no flag is `""`.
pub fn tcp_flags_string(flags: u32) -> String {
    const LETTERS: [(u32, char); 8] = [
        (tcp_flags::FIN, 'F'),
        (tcp_flags::SYN, 'S'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, 'A'),
        (tcp_flags::URG, 'U'),
        (tcp_flags::ECE, 'E'),
        (tcp_flags::CWR, 'C'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

impl FlowRecord {
    /// The record as one JSON object (no trailing newline).
    pub fn to_json_line(&self) -> String {
        let k = &self.key;
        let v = &self.value;
        let icmp = matches!(k.protocol, PROTO_ICMP | PROTO_ICMPV6);
        let tcp = k.protocol == PROTO_TCP;
        let ports = !icmp && !k.is_later_fragment();
        let direction = match k.direction_code() {
            Ok(d) => d.as_str(),
            Err(_) => "unknown",
        };
        let json = Json {
            start: rfc3339_nanos(self.start_unix_ns),
            end: rfc3339_nanos(self.end_unix_ns),
            iface: self.iface.as_deref(),
            ifindex: k.ifindex,
            direction,
            vlan: k.vlan_id,
            ip_version: k.ip_version,
            protocol: k.protocol,
            protocol_name: protocol_name(k.protocol),
            src_addr: k.src().to_string(),
            dst_addr: k.dst().to_string(),
            src_port: ports.then_some(k.src_port),
            dst_port: ports.then_some(k.dst_port),
            icmp_type: (icmp && !k.is_later_fragment()).then_some(k.src_port),
            icmp_code: (icmp && !k.is_later_fragment()).then_some(k.dst_port),
            fragment: k.is_later_fragment(),
            packets: v.packets,
            bytes: v.bytes,
            tcp_flags: tcp.then(|| tcp_flags_string(v.tcp_flags)),
            syn: tcp.then_some(v.syn),
            syn_ack: tcp.then_some(v.syn_ack),
            fin: tcp.then_some(v.fin),
            rst: tcp.then_some(v.rst),
            reason: self.reason.as_str(),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&json).unwrap_or_default()
    }
}

/// Formats Unix nanoseconds as RFC 3339 UTC with nanoseconds:
/// `2024-02-29T23:59:59.123456789Z`.
pub fn rfc3339_nanos(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// Works in 400-year eras of 146,097 days, with years starting on March 1
/// so that the leap day is the last day of the year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01: 719,468 days before 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
                           // Year of era, 0..=399, correcting for the 4-, 100- and 400-year leap rules.
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year
    let mp = (5 * doy + 2) / 153; // month index from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339_nanos(1_709_251_199_999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339_nanos(1_709_251_200_000_000_000),
            "2024-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(4_102_444_800_000_000_000),
            "2100-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(1_735_689_599_500_000_000),
            "2024-12-31T23:59:59.500000000Z"
        );
    }

    #[test]
    fn civil_matches_day_by_day_walk() {
        // Walk day by day from 1970 for 200 years and compare.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(200 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn tcp_flag_letters() {
        assert_eq!(tcp_flags_string(0x12), "SA");
        assert_eq!(tcp_flags_string(0x02), "S");
        assert_eq!(tcp_flags_string(0x1b), "FSPA");
        assert_eq!(tcp_flags_string(0xff), "FSRPAUEC");
        assert_eq!(tcp_flags_string(0), "");
    }
}
