//! Parser of METRICS.md, so tests can check it against what is exported.
//!
//! Format (also stated at the top of METRICS.md): sections are level-2
//! headings ending in `(owner: MODULE)`; each metric family is a level-3
//! heading holding only its name, followed by three list items:
//!
//! ```text
//! ### sensor_packets_total
//! - type: counter
//! - labels: iface, direction
//! - help: Frames seen by the programs ...
//! ```
//!
//! `labels: -` means none. Other lines (prose, tables) are ignored.

use super::MetricsError;

/// One documented family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocFamily {
    pub name: String,
    /// The module that defines it (`metrics`, `http`, `detect`, ...).
    pub owner: String,
    pub kind: String,
    pub help: String,
    pub labels: Vec<String>,
    /// 1-based line of the heading.
    pub line: usize,
}

/// Every family documented in `text`, in order.
pub fn parse(text: &str) -> Result<Vec<DocFamily>, MetricsError> {
    let mut out: Vec<DocFamily> = Vec::new();
    let mut owner: Option<String> = None;
    let mut current: Option<(DocFamily, [bool; 3])> = None;
    let bad = |line: usize, what: String| MetricsError::Doc { line, what };
    let finish = |cur: Option<(DocFamily, [bool; 3])>,
                  out: &mut Vec<DocFamily>|
     -> Result<(), MetricsError> {
        if let Some((fam, seen)) = cur {
            if seen.contains(&false) {
                return Err(bad(
                    fam.line,
                    format!(
                        "{} needs `- type:`, `- labels:` and `- help:` items",
                        fam.name
                    ),
                ));
            }
            if out.iter().any(|f| f.name == fam.name) {
                return Err(bad(fam.line, format!("{} is documented twice", fam.name)));
            }
            out.push(fam);
        }
        Ok(())
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if let Some(h) = line.strip_prefix("## ") {
            finish(current.take(), &mut out)?;
            owner = h
                .rsplit_once("(owner: ")
                .and_then(|(_, o)| o.strip_suffix(')'))
                .map(|o| o.trim().to_string());
        } else if let Some(h) = line.strip_prefix("### ") {
            finish(current.take(), &mut out)?;
            let name = h.trim().trim_matches('`');
            if !name.starts_with("sensor_") {
                continue;
            }
            let Some(owner) = owner.clone() else {
                return Err(bad(
                    n,
                    format!("{name} is outside a `## ... (owner: MODULE)` section"),
                ));
            };
            current = Some((
                DocFamily {
                    name: name.to_string(),
                    owner,
                    line: n,
                    ..Default::default()
                },
                [false; 3],
            ));
        } else if let Some((fam, seen)) = current.as_mut() {
            let Some(item) = line.strip_prefix("- ") else {
                continue;
            };
            if let Some(v) = item.strip_prefix("type:") {
                fam.kind = v.trim().to_string();
                seen[0] = true;
            } else if let Some(v) = item.strip_prefix("labels:") {
                let v = v.trim();
                fam.labels = if v == "-" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|l| l.trim().trim_matches('`').to_string())
                        .collect()
                };
                seen[1] = true;
            } else if let Some(v) = item.strip_prefix("help:") {
                fam.help = v.trim().to_string();
                seen[2] = true;
            }
        }
    }
    finish(current.take(), &mut out)?;
    Ok(out)
}
