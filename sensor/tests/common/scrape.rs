//! Reading a running sensor from outside: `/metrics` text parsed into
//! series, bounded scrapes, the process's memory from /proc, and the
//! programs attached to an interface.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

/// One series of a scrape: name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Metric name (with `_bucket`, `_sum`... suffixes as exposed).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped).
pub fn parse(body: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => panic!("bad metrics line {line:?}"),
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match head.find('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some(i) => {
                let inner = head[i + 1..]
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                (head[..i].to_string(), parse_labels(inner, line))
            }
        };
        out.push(Series {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(mut s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let eq = s
            .find("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let key = s[..eq].trim_start_matches(',').to_string();
        let rest = &s[eq + 2..];
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(match c {
                            'n' => '\n',
                            c => c,
                        });
                    }
                }
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(key, value);
        s = &rest[end + 1..];
    }
    labels
}

/// The series named `name` whose labels include every `(key, value)` of
/// `with`.
pub fn select<'a>(all: &'a [Series], name: &str, with: &[(&str, &str)]) -> Vec<&'a Series> {
    all.iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the single series `name` with labels `with`, or None when
/// there is none; panics when several match.
pub fn value(all: &[Series], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let found = select(all, name, with);
    assert!(found.len() <= 1, "{name} {with:?} matches {found:?}");
    found.first().map(|s| s.value)
}

/// A GET that must complete within `limit` (connect, send, read): status,
/// body and how long it took.
pub fn get_within(
    addr: &str,
    path: &str,
    limit: Duration,
) -> Result<(u16, String, Duration), String> {
    let start = Instant::now();
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, limit).map_err(|e| format!("connect: {e}"))?;
    let left = |start: Instant| {
        limit
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left(start)))
        .and_then(|()| s.set_read_timeout(Some(left(start))))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if start.elapsed() >= limit {
            return Err(format!("no complete answer within {limit:?}"));
        }
        s.set_read_timeout(Some(left(start)))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read after {:?}: {e}", start.elapsed())),
        }
    }
    let took = start.elapsed();
    let text = String::from_utf8(buf).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_string(), took))
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM...), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    kib * 1024
}

/// Programs attached to `iface` (root namespace): the XDP program's name
/// from `ip -d link`, and the names of TCX egress programs from the kernel
/// (BPF_PROG_QUERY; bpftool 7.1 cannot show TCX). Empty when nothing is
/// attached.
pub fn programs_on(iface: &str) -> Vec<String> {
    let mut found = Vec::new();
    let out = super::netns::sh(&["ip", "-d", "link", "show", "dev", iface]);
    let link = String::from_utf8_lossy(&out.stdout);
    if let Some(rest) = link.split("prog/xdp").nth(1) {
        let name = rest
            .split_whitespace()
            .skip_while(|w| *w != "name")
            .nth(1)
            .unwrap_or("?");
        found.push(format!("xdp:{name}"));
    }
    let (_, progs) =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::tc::TcAttachType::Egress)
            .unwrap_or_else(|e| panic!("querying TCX egress programs of {iface}: {e}"));
    for p in progs {
        found.push(format!("tcx_egress:{}", p.name_as_str().unwrap_or("?")));
    }
    let out = super::netns::sh(&["tc", "filter", "show", "dev", iface, "egress"]);
    let tc = String::from_utf8_lossy(&out.stdout);
    if tc.contains("bpf") {
        found.push(format!("tc_egress:{}", tc.trim()));
    }
    found
}
