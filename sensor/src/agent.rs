//! The agent loop: load, attach, then every interval drain -> flow table ->
//! records -> rates -> detectors -> metrics, until shutdown.
//!
//! Blocking work (the drain's syscalls, the flow table, record output) runs
//! in one [`Pipeline`] that each tick moves onto tokio's blocking pool with
//! `spawn_blocking` and gets back when done, so the executor stays free for
//! the HTTP endpoint and signals. Ticks that overrun are delayed, never
//! bunched (`MissedTickBehavior::Delay`).
//!
//! Shutdown (the future given to [`run`]): programs are detached first, so
//! nothing is counted after the final drain; then one final drain, every
//! flow still in the table written as a `shutdown` record, outputs flushed.
//! In persistent mode (`--pin-path`) the programs stay attached and the
//! flows stay in the journal for the next start (see [`crate::persist`]).
//! SIGHUP re-reads `--config` and applies what can change at run time.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{signal, SignalKind},
    time::MissedTickBehavior,
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{Config, Output},
    detect::{DetectError, Detector, EventWriter},
    drain::{monotonic_ns, Drainer},
    flowtable::{FlowRecord, FlowTable, FlowTableConfig, RecordWriter, WriterError},
    http::{self, Health},
    loader::{IfaceChange, LoadError, LoadOptions, Sensor},
    metrics::{BuildInfo, Metrics, MetricsError},
    model::{AttachInfo, ProgramStats},
    rates::{Rates, RatesConfig},
};

/// Errors that stop the agent (exit code 1, or 64 for
/// [`AgentError::is_usage`]), each saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Loading or verifying the programs failed.
    #[error("{0}")]
    Load(#[source] LoadError),
    /// Attaching to an interface failed.
    #[error("attaching to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: LoadError,
    },
    /// The flow records output could not be opened.
    #[error("{0}")]
    Output(#[from] WriterError),
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler failed: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error(
        "cannot listen on {addr}: {source}; is another sensor or exporter using the port? \
         choose another with --listen-address"
    )]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The `--web.config.file` is invalid (exit 64: a configuration error).
    #[error("{0}")]
    WebConfig(#[from] http::WebConfigError),
    /// The detector could not start (its events output, or its metrics).
    #[error("{0}")]
    Detect(#[from] DetectError),
    /// The metric families could not be registered (a bug).
    #[error("{0}")]
    Metrics(#[from] MetricsError),
    /// Persistent mode's journal could not be opened or read.
    #[error("{0}")]
    Persist(#[from] crate::persist::PersistError),
    /// The pipeline worker panicked (a bug: please report it with the log).
    #[error("the pipeline worker stopped unexpectedly: {0}; this is a bug, please report it with the log")]
    Worker(String),
}

impl AgentError {
    /// True for errors in the configuration given (exit code 64).
    pub fn is_usage(&self) -> bool {
        matches!(self, AgentError::WebConfig(_))
    }
}

/// `LoadOptions` for a configuration.
pub fn load_options(config: &Config) -> LoadOptions {
    LoadOptions {
        flow_map_entries: config.flow_map_entries,
        xdp_mode: config.xdp_mode,
        pin_path: config.pin_path.clone(),
    }
}

/// `sensor check`: the configuration is already valid; load and verify the
/// programs without attaching them, then unload.
pub async fn check(config: Config) -> Result<(), AgentError> {
    http::WebConfig::load_opt(config.web_config_file.as_deref())?;
    // Verify only: no pins are created or reused.
    let opts = LoadOptions {
        pin_path: None,
        ..load_options(&config)
    };
    let sensor = Sensor::load(&opts).map_err(AgentError::Load)?;
    info!(
        flow_map_entries = sensor.flow_map_entries(),
        "configuration valid; programs loaded and verified (not attached)"
    );
    drop(sensor);
    Ok(())
}

/// `sensor run`: attaches to every configured interface and runs until
/// `shutdown` completes, then flushes every flow and detaches.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let mut config = config;
    // Configuration first: a bad web config is a usage error (exit 64),
    // found before anything is loaded or attached.
    let web = http::WebConfig::load_opt(config.web_config_file.as_deref())?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|source| AgentError::Signal {
        signal: "SIGHUP",
        source,
    })?;
    let flows_out = config
        .flows_file
        .as_ref()
        .map(RecordWriter::open)
        .transpose()?;

    // Loading and attaching are short, one-off syscalls at start.
    let mut sensor = Sensor::load(&load_options(&config)).map_err(AgentError::Load)?;
    let mut pending = Vec::new();
    for iface in &config.ifaces {
        match sensor.attach(iface) {
            Ok(_) => {}
            Err(LoadError::UnknownInterface { .. }) if config.wait_for_iface => {
                warn!(
                    iface,
                    "interface does not exist yet; waiting for it (--wait-for-iface)"
                );
                pending.push(iface.clone());
            }
            Err(source) => {
                return Err(AgentError::Attach {
                    iface: iface.clone(),
                    source,
                })
            }
        }
    }
    let mut drainer = sensor.drainer().map_err(AgentError::Load)?;
    let (persist, restored) = match sensor.pin_identity() {
        Some(identity) => {
            let (p, restored) = open_persist(&config, identity, &mut drainer)?;
            (Some(p), restored)
        }
        None => (None, None),
    };

    let registry = prometheus::Registry::new();
    let mut metrics = Metrics::new(&registry, BuildInfo::current())?;
    for iface in &config.ifaces {
        metrics.add_iface(iface);
    }
    metrics.set_poll_interval(config.interval);
    let health = Arc::new(Health::new());
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.listen_address,
            source,
        })?;
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(http::serve(
        listener,
        registry.clone(),
        health.clone(),
        web,
        async {
            let _ = http_stopped.await;
        },
    ));
    let detector = Detector::new(config.detection.clone(), &registry)?;
    let events_out = match &config.events {
        None => None,
        Some(Output::Stdout) => Some(EventWriter::open("-")?),
        Some(Output::File(p)) => Some(EventWriter::open(&p.to_string_lossy())?),
    };
    let mut pipeline = Pipeline::new(
        &config,
        drainer,
        flows_out,
        metrics,
        health.clone(),
        Detection {
            detector,
            out: events_out,
        },
    );
    if let Some((meta, entries)) = restored {
        let evicted = pipeline.table.restore(&meta, entries);
        pipeline.write(&evicted);
        info!(
            flows = pipeline.table.len(),
            "persistent mode: flow table restored from the journal"
        );
    }
    pipeline.persist = persist;

    let start = tokio::time::Instant::now() + config.interval;
    let mut ticker = tokio::time::interval_at(start, config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    info!(
        ifaces = ?config.ifaces,
        interval = ?config.interval,
        listen_address = %config.listen_address,
        "sensor running"
    );

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {
                retry_pending(&mut sensor, &mut pending);
                log_changes(sensor.reconcile());
                pipeline.all_attached = pending.is_empty();
                sensor.flush_logs();
                let kernel = KernelSide {
                    attachments: sensor.attachments(),
                    programs: sensor.program_stats(),
                };
                pipeline = on_worker(pipeline, move |p| p.step(kernel)).await?;
            }
            Some(()) = hangup.recv() => {
                reload(&mut config, &mut pipeline);
            }
        }
    }

    info!("shutting down: detaching, final drain, flushing flow records");
    health.set_ready(false);
    sensor.detach_all();
    let kernel = KernelSide {
        attachments: sensor.attachments(),
        programs: sensor.program_stats(),
    };
    let pipeline = on_worker(pipeline, move |p| p.finish(kernel)).await?;
    sensor.flush_logs();
    let _ = http_stop.send(());
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("metrics endpoint: {e}"),
        Err(e) => warn!("metrics endpoint task: {e}"),
    }
    info!(
        records = pipeline.records_written,
        drain_errors = pipeline.drain_errors,
        write_errors = pipeline.write_errors,
        "sensor stopped"
    );
    Ok(())
}

/// Persistent mode: opens the journal, cuts the records file back to what
/// the last frame saw, and aligns the drainer with the kernel's buffers.
/// Returns the journal and the table state to restore.
// Called once at start; its errors are `run`'s own.
#[allow(clippy::type_complexity, clippy::result_large_err)]
fn open_persist(
    config: &Config,
    identity: [u32; 3],
    drainer: &mut Drainer,
) -> Result<
    (
        Persist,
        Option<(
            crate::flowtable::TableMeta,
            Vec<crate::flowtable::FlowEntry>,
        )>,
    ),
    AgentError,
> {
    let (journal, recovered) = crate::persist::Journal::open(&config.state_dir, identity)?;
    let records_path = match &config.flows_file {
        Some(Output::File(p)) => Some(p.clone()),
        Some(Output::Stdout) => {
            warn!(
                "persistent mode with flow records on standard output: records of a drain \
                 interrupted by a crash may be written twice; use --flows-file PATH for \
                 exactly-once records"
            );
            None
        }
        None => None,
    };
    drainer.set_two_phase(true);
    let mut persist = Persist {
        journal,
        identity,
        seq: 0,
        records_path,
        errors: 0,
    };
    let Some(r) = recovered else {
        info!(state_dir = %config.state_dir.display(), "persistent mode: no journal to resume; starting with an empty flow table");
        return Ok((persist, None));
    };
    persist.seq = r.header.seq;
    if let (Some(path), Some(len)) = (&persist.records_path, r.header.records_len) {
        let now = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if now > len {
            // Records of a drain whose frame was never written: that drain
            // is repeated and writes them again.
            let f = std::fs::OpenOptions::new().write(true).open(path);
            match f.and_then(|f| f.set_len(len)) {
                Ok(()) => info!(
                    path = %path.display(),
                    cut = now - len,
                    "persistent mode: records of an unfinished drain removed; it is repeated"
                ),
                Err(e) => {
                    warn!(path = %path.display(), "cannot cut back the records file: {e}; some records may repeat")
                }
            }
        }
    }
    let cleared = drainer
        .recover(r.header.active_after, r.header.last_flip_ns)
        .map_err(|e| AgentError::Load(LoadError::Drain(e)))?;
    info!(
        frames = r.frames,
        flows = r.entries.len(),
        torn_bytes = r.torn_bytes,
        cleared,
        "persistent mode: journal replayed"
    );
    Ok((persist, Some((r.header.table, r.entries))))
}

/// Runs `f` on the pipeline in tokio's blocking pool and hands it back.
async fn on_worker(
    mut pipeline: Pipeline,
    f: impl FnOnce(&mut Pipeline) + Send + 'static,
) -> Result<Pipeline, AgentError> {
    tokio::task::spawn_blocking(move || {
        f(&mut pipeline);
        pipeline
    })
    .await
    .map_err(|e| AgentError::Worker(e.to_string()))
}

/// Logs what [`Sensor::reconcile`] found; the attach-state metrics follow
/// from the attachments every interval.
fn log_changes(changes: Vec<IfaceChange>) {
    for c in changes {
        match c {
            IfaceChange::Vanished { iface } => warn!(
                iface,
                "interface vanished; its programs went with it. Reattaching when it comes back"
            ),
            IfaceChange::Reattached {
                iface,
                ifindex,
                xdp_mode,
            } => info!(iface, ifindex, xdp_mode, "interface is back; reattached"),
            IfaceChange::AttachFailed { iface, error } => {
                warn!(
                    iface,
                    "interface is back but attaching failed: {error}; retrying"
                )
            }
        }
    }
}

/// Attaches interfaces that appeared since the last tick.
fn retry_pending(sensor: &mut Sensor, pending: &mut Vec<String>) {
    // Interfaces that go away and come back after attach are issue 7's
    // work; this only covers the ones missing at start.
    pending.retain(|iface| match sensor.attach(iface) {
        Ok(_) => false,
        Err(LoadError::UnknownInterface { .. }) => true,
        Err(e) => {
            warn!(
                iface,
                "interface appeared but attaching failed: {e}; retrying next interval"
            );
            true
        }
    });
}

/// SIGHUP: re-reads the config file and applies what can change live.
fn reload(config: &mut Config, pipeline: &mut Pipeline) {
    match config.reload_from_file() {
        Ok(new) => {
            let restart = config.restart_required(&new);
            if !restart.is_empty() {
                warn!(keys = ?restart, "configuration reloaded; these keys only take effect after a restart");
            }
            pipeline.top_k = new.top_k;
            pipeline.rates.set_top_k(new.top_k);
            if let Err(e) = pipeline
                .detection
                .detector
                .try_reload(new.detection.clone())
            {
                warn!("detection settings not reloaded: {e}");
            }
            info!(top_k = new.top_k, "configuration reloaded");
            config.apply_live(&new);
        }
        Err(e) => warn!("configuration reload failed, keeping the running configuration: {e}"),
    }
}

/// What the loader knows and the drain does not, for the interval's
/// kernel stats.
struct KernelSide {
    attachments: Vec<AttachInfo>,
    programs: Vec<ProgramStats>,
}

/// An interval with at least this many flows leaves large freed blocks in
/// the allocator's heaps; they are handed back to the kernel afterwards.
const TRIM_AFTER_FLOWS: usize = 50_000;

/// Hands freed heap memory back to the kernel. glibc keeps the blocks a
/// large interval freed (its delta vector, the rates' and detectors'
/// per-interval maps): at 1M flows one sample read 513 MiB of RSS without
/// this; with it the settled RSS measured 365-377 MiB.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Everything one tick runs, owned by whichever thread runs the tick.
struct Pipeline {
    drainer: Drainer,
    table: FlowTable,
    flows_out: Option<RecordWriter>,
    /// Current top-K (changes on SIGHUP).
    top_k: usize,
    drain_errors: u64,
    write_errors: u64,
    records_written: u64,
    drain_log: RateLimitedLog,
    write_log: RateLimitedLog,
    rates: Rates,
    metrics: Metrics,
    detection: Detection,
    health: Arc<Health>,
    /// False while an interface awaited with --wait-for-iface is missing.
    all_attached: bool,
    /// Persistent mode's journal.
    persist: Option<Persist>,
}

/// Persistent mode's journal and what its frames need.
struct Persist {
    journal: crate::persist::Journal,
    identity: [u32; 3],
    seq: u64,
    records_path: Option<std::path::PathBuf>,
    errors: u64,
}

impl Pipeline {
    fn new(
        config: &Config,
        drainer: Drainer,
        flows_out: Option<RecordWriter>,
        metrics: Metrics,
        health: Arc<Health>,
        detection: Detection,
    ) -> Pipeline {
        Pipeline {
            detection,
            rates: Rates::new(RatesConfig {
                top_k: config.top_k,
                tau: config.ewma_tau,
            }),
            metrics,
            health,
            all_attached: false,
            drainer,
            table: FlowTable::new(FlowTableConfig {
                max_flows: config.max_flows,
                active_timeout: config.active_timeout,
                idle_timeout: config.idle_timeout,
            }),
            flows_out,
            top_k: config.top_k,
            drain_errors: 0,
            write_errors: 0,
            records_written: 0,
            drain_log: RateLimitedLog::new(Duration::from_secs(10)),
            write_log: RateLimitedLog::new(Duration::from_secs(10)),
            persist: None,
        }
    }

    /// One interval: drain, account, write records, feed later stages.
    /// A failed drain is logged (rate-limited) and counted; the counts stay
    /// in the kernel buffer for the next drain.
    fn step(&mut self, kernel: KernelSide) {
        let started = Instant::now();
        let mut iv = match self.drainer.drain() {
            Ok(iv) => iv,
            Err(e) => {
                self.drain_errors += 1;
                self.metrics.observe_poll(started.elapsed(), false);
                if let Some(suppressed) = self.drain_log.allow() {
                    error!(
                        total = self.drain_errors,
                        suppressed,
                        "drain failed: {e}; unread counts stay in the kernel buffer for a later drain"
                    );
                }
                return;
            }
        };
        if let Some(k) = iv.kernel.as_mut() {
            k.attachments = kernel.attachments;
            k.programs = kernel.programs;
        }
        let records = self.table.apply(&iv);
        self.write(&records);
        self.journal(&iv, &records);
        debug!(
            flows = iv.flows.len(),
            table = self.table.len(),
            records = records.len(),
            "interval drained"
        );
        let snapshot = self.rates.update(&iv);
        self.metrics.observe_interval(&iv, snapshot);
        let events = self.detection.detector.observe(&iv);
        self.detection.write(&events);
        self.metrics.observe_flowtable(&self.table.stats());
        self.metrics.observe_poll(started.elapsed(), true);
        self.health.set_ready(self.all_attached);
        let large = iv.flows.len() >= TRIM_AFTER_FLOWS;
        // Everything the interval held is freed first.
        drop((iv, records, events));
        if large {
            trim_heap();
        }
    }

    /// Persistent mode: journals what this drain changed, then lets the
    /// drainer delete what it read. A failed frame is logged and counted;
    /// the drain still completes, so counting goes on (a crash before the
    /// next good frame would then lose that drain's flows).
    fn journal(&mut self, iv: &crate::model::Interval, records: &[FlowRecord]) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let mut touched: Vec<sensor_common::FlowKey> = iv
            .flows
            .iter()
            .map(|d| d.key)
            .chain(records.iter().map(|r| r.key))
            .collect();
        touched.sort_unstable_by(|a, b| key_bytes(a).cmp(key_bytes(b)));
        touched.dedup();
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        for k in touched {
            match self.table.get(&k) {
                Some(e) => upserts.push(*e),
                None => removes.push(k),
            }
        }
        let header = crate::persist::Header {
            identity: p.identity,
            seq: p.seq + 1,
            active_after: self.drainer.active(),
            last_flip_ns: self.drainer.last_flip_ns(),
            records_len: p
                .records_path
                .as_ref()
                .and_then(|path| std::fs::metadata(path).ok())
                .map(|m| m.len()),
            table: self.table.meta(),
        };
        let table = &self.table;
        match p.journal.commit(&header, &upserts, &removes, || {
            table.iter().copied().collect()
        }) {
            Ok(()) => p.seq += 1,
            Err(e) => {
                p.errors += 1;
                if let Some(suppressed) = self.write_log.allow() {
                    error!(
                        total = p.errors,
                        suppressed,
                        "persistent mode: {e}; a crash now would lose this interval's flows"
                    );
                }
            }
        }
        if let Err(e) = self.drainer.complete() {
            self.drain_errors += 1;
            if let Some(suppressed) = self.drain_log.allow() {
                error!(
                    total = self.drain_errors,
                    suppressed, "clearing the drained buffer: {e}"
                );
            }
        }
    }

    /// Final drain (programs already detached), then every flow as a
    /// `shutdown` record, then flush. In persistent mode the programs are
    /// still attached and the flows stay journaled for the next start.
    fn finish(&mut self, kernel: KernelSide) {
        self.step(kernel);
        if self.persist.is_some() {
            info!(
                flows = self.table.len(),
                "persistent mode: flows kept in the journal for the next start"
            );
            return;
        }
        let records = self.table.flush(monotonic_ns());
        self.write(&records);
        self.metrics.observe_flowtable(&self.table.stats());
    }

    fn write(&mut self, records: &[FlowRecord]) {
        let Some(out) = self.flows_out.as_mut() else {
            return;
        };
        let result = out.write(records).and_then(|()| out.flush());
        match result {
            Ok(()) => self.records_written += records.len() as u64,
            Err(e) => {
                self.write_errors += 1;
                if let Some(suppressed) = self.write_log.allow() {
                    error!(total = self.write_errors, suppressed, "{e}");
                }
                // PIPELINE: metrics — export self.write_errors.
            }
        }
    }
}

fn key_bytes(k: &sensor_common::FlowKey) -> &[u8] {
    // SAFETY: FlowKey is repr(C) with explicit padding: every byte is
    // initialised.
    unsafe {
        std::slice::from_raw_parts(
            (k as *const sensor_common::FlowKey).cast::<u8>(),
            std::mem::size_of::<sensor_common::FlowKey>(),
        )
    }
}

/// The detection stage and its events output.
struct Detection {
    detector: Detector,
    out: Option<EventWriter>,
}

impl Detection {
    fn write(&mut self, events: &[crate::detect::Event]) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if let Err(e) = out.write_all(events).and_then(|()| out.flush()) {
            warn!("writing anomaly events: {e}");
        }
    }
}

/// Logs a repeated condition at most once per period; the caller keeps a
/// counter that metrics export, so logs and metrics agree.
#[derive(Debug)]
struct RateLimitedLog {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(period: Duration) -> RateLimitedLog {
        RateLimitedLog {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being the occurrences
    /// suppressed since the previous line.
    fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_counts_suppressed_lines() {
        let mut l = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.allow_at(t0), Some(0));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn pipeline_is_send() {
        fn send<T: Send + 'static>() {}
        send::<Pipeline>();
    }
}
