//! Offline analysis: `sensor analyze FILE`.
//!
//! A pcap or pcapng capture goes through the same stages as live traffic:
//! each frame is classified and keyed by a userspace copy of the kernel's
//! parser, frames are grouped into [`Interval`]s by packet timestamp, and
//! the intervals feed the same flow table, rates and detector as the agent
//! (all of which take time from the interval, never from the wall clock).
//! The result is a [`Report`]; flow records and anomaly events can be
//! written exactly as the live agent writes them. No privilege is needed.
//!
//! Direction: from the capture where it says (pcapng `epb_flags`, the
//! packet type of Linux cooked captures), else ingress: the capture point
//! is taken as the receiving side. Interfaces are numbered from 1 in the
//! order the capture describes them.
//!
//! Layout:
//! - [`capture`]: the streaming pcap/pcapng reader;
//! - [`parse`]: the kernel's header walk in userspace;
//! - [`intervals`]: frames to intervals with cumulative totals;
//! - [`report`]: the report and its text and JSON forms;
//! - this module: options, errors, the run loop and the progress line.

pub mod capture;
pub mod intervals;
pub mod parse;
pub mod report;

use std::{
    fs::File,
    io::{BufReader, IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sensor_common::Direction;

use crate::{
    config::Output,
    detect::{DetectConfig, DetectError, Detector, EventWriter},
    flowtable::{FlowRecord, FlowTable, FlowTableConfig, RecordWriter, WriterError},
    model::Interval,
    rates::{Rates, RatesConfig},
};
use capture::{CaptureError, CaptureReader};
use intervals::IntervalBuilder;
pub use report::Report;

/// Settings of one analysis (validated by the caller's configuration).
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    /// The capture file.
    pub file: PathBuf,
    /// Interval length.
    pub interval: Duration,
    /// Entries in the top talkers and top flows.
    pub top_k: usize,
    /// Flow records output.
    pub flows_file: Option<Output>,
    /// Anomaly events output.
    pub events: Option<Output>,
    /// Flow table settings (timeouts, capacity).
    pub flow_table: FlowTableConfig,
    /// EWMA time constant of the rates.
    pub ewma_tau: Duration,
    /// Detection settings.
    pub detection: DetectConfig,
    /// Show a progress line on standard error (only if it is a terminal).
    pub progress: bool,
}

impl AnalyzeOptions {
    /// Options for `file` from a validated configuration (interval, top-K,
    /// outputs, flow table, EWMA and detection settings).
    pub fn from_config(file: PathBuf, config: &crate::config::Config) -> AnalyzeOptions {
        AnalyzeOptions {
            file,
            interval: config.interval,
            top_k: config.top_k,
            flows_file: config.flows_file.clone(),
            events: config.events.clone(),
            flow_table: FlowTableConfig {
                max_flows: config.max_flows,
                active_timeout: config.active_timeout,
                idle_timeout: config.idle_timeout,
            },
            ewma_tau: config.ewma_tau,
            detection: config.detection.clone(),
            progress: true,
        }
    }
}

/// Errors of an analysis; a capture error still leaves a report of the
/// frames before it (see [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The capture file could not be opened.
    #[error("cannot open capture {}: {source}; check the path and that it is readable", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The capture is truncated or corrupt (the report covers the frames
    /// before the offset).
    #[error("{}: {source}", path.display())]
    Capture {
        /// The capture file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: CaptureError,
    },
    /// Flow records could not be written.
    #[error("{0}")]
    Records(#[from] WriterError),
    /// The detector could not start or its events could not be written.
    #[error("{0}")]
    Detect(#[from] DetectError),
}

/// The report, and the error that cut the analysis short, if any.
#[derive(Debug)]
pub struct Outcome {
    /// The report of every frame read.
    pub report: Report,
    /// Set when reading stopped early; the report is still valid.
    pub error: Option<AnalyzeError>,
}

/// Figures of the run itself, for the progress line and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Frames read.
    pub frames: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// Every stage after the interval builder, as in the agent's pipeline.
struct Stages {
    table: FlowTable,
    rates: Rates,
    detector: Detector,
    records: Option<RecordWriter>,
    events: Option<EventWriter>,
    report: report::ReportBuilder,
    written: u64,
    last_end_ns: u64,
}

impl Stages {
    fn interval(&mut self, iv: &Interval) -> Result<(), AnalyzeError> {
        let records = self.table.apply(iv);
        self.write(&records)?;
        self.rates.update(iv);
        let events = self.detector.observe(iv);
        if let Some(out) = self.events.as_mut() {
            out.write_all(&events)?;
        }
        self.report.interval(iv, &events);
        self.last_end_ns = iv.end_ns;
        Ok(())
    }

    fn write(&mut self, records: &[FlowRecord]) -> Result<(), AnalyzeError> {
        if let Some(out) = self.records.as_mut() {
            out.write(records)?;
            self.written += records.len() as u64;
        }
        Ok(())
    }
}

/// Analyses a capture. Errors opening the file or the outputs are
/// returned as `Err`; a capture that turns out truncated or corrupt gives
/// `Ok` with the report of the frames before the fault and the error.
pub fn run(opts: &AnalyzeOptions) -> Result<(Outcome, RunStats), AnalyzeError> {
    let started = Instant::now();
    let file = File::open(&opts.file).map_err(|source| AnalyzeError::Open {
        path: opts.file.clone(),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let registry = prometheus::Registry::new();
    let mut stages = Stages {
        table: FlowTable::new(opts.flow_table),
        rates: Rates::new(RatesConfig {
            top_k: opts.top_k,
            tau: opts.ewma_tau,
        }),
        detector: Detector::new(opts.detection.clone(), &registry)?,
        records: opts
            .flows_file
            .as_ref()
            .map(RecordWriter::open)
            .transpose()?,
        events: match &opts.events {
            None => None,
            Some(Output::Stdout) => Some(EventWriter::open("-")?),
            Some(Output::File(p)) => Some(EventWriter::open(&p.to_string_lossy())?),
        },
        report: report::ReportBuilder::default(),
        written: 0,
        last_end_ns: 0,
    };
    let mut progress = Progress::new(opts.progress && std::io::stderr().is_terminal(), size);
    let mut builder =
        IntervalBuilder::new(u64::try_from(opts.interval.as_nanos()).unwrap_or(u64::MAX));
    let mut frames = 0u64;
    let capture_error = match read_all(
        &opts.file,
        file,
        &mut builder,
        &mut stages,
        &mut frames,
        &mut progress,
    ) {
        Ok(()) => None,
        Err(AnalyzeError::Capture { path, source }) => Some(AnalyzeError::Capture { path, source }),
        Err(e) => return Err(e),
    };
    progress.done();
    if let Some(iv) = builder.finish() {
        stages.interval(&iv)?;
    }
    let records = stages.table.flush(stages.last_end_ns);
    stages.write(&records)?;
    if let Some(out) = stages.records.as_mut() {
        out.flush()?;
    }
    if let Some(out) = stages.events.as_mut() {
        out.flush()?;
    }
    let top_sources = stages.detector.config().top_sources;
    let written = stages.written;
    let mut report = stages.report.finish(
        &opts.file.display().to_string(),
        opts.top_k,
        stages.last_end_ns,
        stages.detector.active(),
        top_sources,
    );
    report.flow_records = written;
    report.error = capture_error.as_ref().map(ToString::to_string);
    Ok((
        Outcome {
            report,
            error: capture_error,
        },
        RunStats {
            frames,
            elapsed: started.elapsed(),
        },
    ))
}

fn read_all(
    path: &Path,
    file: File,
    builder: &mut IntervalBuilder,
    stages: &mut Stages,
    frames: &mut u64,
    progress: &mut Progress,
) -> Result<(), AnalyzeError> {
    let capture_err = |source| AnalyzeError::Capture {
        path: path.to_path_buf(),
        source,
    };
    let mut reader =
        CaptureReader::new(BufReader::with_capacity(1 << 20, file)).map_err(capture_err)?;
    // Names for interfaces the capture does not name.
    let mut defaults: Vec<String> = Vec::new();
    while let Some(p) = reader.next_packet().map_err(capture_err)? {
        while defaults.len() <= p.iface {
            defaults.push(format!("capture{}", defaults.len()));
        }
        let name = p.iface_name.unwrap_or(&defaults[p.iface]);
        let direction = p.direction.unwrap_or(Direction::Ingress);
        let ifindex = p.iface as u32 + 1;
        *frames += 1;
        stages.report.frame(p.ts_ns);
        let closed = builder.push(p.ts_ns, ifindex, name, direction, p.data, p.wire_len);
        for iv in closed {
            stages.interval(&iv)?;
        }
        progress.tick(reader.offset(), *frames);
    }
    Ok(())
}

/// A one-line progress indicator on a terminal: percent of the file read,
/// frames and frames per second, redrawn at most 4 times a second.
struct Progress {
    on: bool,
    size: u64,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new(on: bool, size: u64) -> Progress {
        Progress {
            on,
            size,
            started: Instant::now(),
            last: None,
        }
    }

    fn tick(&mut self, offset: u64, frames: u64) {
        if !self.on || !frames.is_multiple_of(4096) {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_millis(250))
        {
            return;
        }
        self.last = Some(now);
        let pct = if self.size > 0 {
            offset as f64 * 100.0 / self.size as f64
        } else {
            0.0
        };
        let width = 30usize;
        let filled = ((pct / 100.0) * width as f64) as usize;
        let rate = frames as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {pct:5.1} %  {frames} frames  {rate:.0} frames/s ",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width))
        );
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.on && self.last.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(80));
            let _ = err.flush();
        }
    }
}
