//! Figures, targets and their summaries (median and spread of several runs).

use serde::Serialize;

/// One measured figure: the median of `runs` samples and their spread.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max - min) / median, in percent.
    pub spread_pct: f64,
    pub runs: usize,
    pub note: String,
}

/// A target of the benchmark issue and how far the measurement is from it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub target: String,
    pub measured: String,
    /// None when the figure could not be measured.
    pub met: Option<bool>,
}

/// Summarises samples into a figure.
pub fn figure(
    section: &'static str,
    name: impl Into<String>,
    unit: &'static str,
    samples: &[f64],
) -> Figure {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    let min = s.first().copied().unwrap_or(f64::NAN);
    let max = s.last().copied().unwrap_or(f64::NAN);
    let spread_pct = if median != 0.0 {
        (max - min) / median.abs() * 100.0
    } else {
        0.0
    };
    Figure {
        section,
        name: name.into(),
        unit,
        median,
        min,
        max,
        spread_pct,
        runs: s.len(),
        note: String::new(),
    }
}

/// The p-th percentile (0..=100) of samples, nearest rank.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Collects figures, targets and notes of a run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub environment: Vec<(String, String)>,
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a figure and returns its median.
    pub fn add(&mut self, f: Figure) -> f64 {
        let m = f.median;
        println!(
            "  {:<58} {:>12.2} {:<8} (spread {:.1}%, {} runs){}",
            f.name,
            f.median,
            f.unit,
            f.spread_pct,
            f.runs,
            if f.note.is_empty() {
                String::new()
            } else {
                format!(" [{}]", f.note)
            }
        );
        self.figures.push(f);
        m
    }

    /// Adds a figure with a note.
    pub fn add_noted(&mut self, mut f: Figure, note: impl Into<String>) -> f64 {
        f.note = note.into();
        self.add(f)
    }

    /// Records a target: `met` compares `measured` with `limit`
    /// (`at_most`: lower is better).
    pub fn target(
        &mut self,
        name: &'static str,
        target: String,
        measured: f64,
        unit: &str,
        met: Option<bool>,
    ) {
        let measured = if measured.is_finite() {
            format!("{measured:.2} {unit}")
        } else {
            "n/a".to_string()
        };
        println!(
            "  target {name}: {target} -> measured {measured} ({})",
            match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
        self.targets.push(Target {
            name,
            target,
            measured,
            met,
        });
    }

    /// Adds a free-form note (printed and kept).
    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("  note: {s}");
        self.notes.push(s);
    }
}
