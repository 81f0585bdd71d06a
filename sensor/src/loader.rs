//! Loading the eBPF object, attaching and detaching programs.
//!
//! [`Sensor::load`] checks privileges, loads and verifies both programs and
//! sizes the flow buffers. [`Sensor::attach`] gives the interface a totals
//! slot, then attaches XDP (ingress) and TC (egress). Every error says what
//! to try next.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{
        tc::{self, SchedClassifierLinkId, TcAttachType},
        ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use sensor_common::{
    MAP_FLOWS_A, MAP_FLOWS_B, MAP_IFACE_SLOTS, MAX_IFACE_SLOTS, PROG_TC, PROG_XDP,
};
use tracing::{debug, info, warn};

use crate::{
    drain::{DrainError, Drainer},
    model::{AttachInfo, ProgramStats},
};

/// The compiled eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// The eBPF object embedded in this binary (empty when built with
/// `AYA_BUILD_SKIP=1`).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Try native (driver) mode, fall back to generic (skb) with a warning.
    #[default]
    Auto,
    Native,
    Skb,
}

/// What `Sensor::load` needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of each of the two flow buffers.
    pub flow_map_entries: u32,
    pub xdp_mode: XdpModeSetting,
    /// Persistent mode: pin programs, links and maps here (bpffs).
    pub pin_path: Option<PathBuf>,
}

/// Errors of loading and attaching, each saying what to try next.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "missing capabilities: {missing}; run as root, or grant CAP_BPF, CAP_NET_ADMIN and \
         CAP_PERFMON (e.g. AmbientCapabilities= in the systemd unit)"
    )]
    MissingCapabilities { missing: String },
    #[error(
        "the eBPF object was not built into this binary (AYA_BUILD_SKIP was set); rebuild \
         with `cargo xtask build`"
    )]
    ObjectMissing,
    #[error("loading the eBPF object failed: {source}; run with --log-level debug for details")]
    Object {
        #[source]
        source: EbpfError,
    },
    #[error(
        "the kernel's verifier rejected program {program}: {io_error}; the verifier log is \
         logged at debug level (--log-level debug)"
    )]
    Verifier {
        program: &'static str,
        io_error: std::io::Error,
        /// The full verifier log (not part of the message).
        log: String,
    },
    #[error("program {program} failed to load: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the object has no {what} named {name}; the binary and object disagree, rebuild")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("unknown interface {iface:?}; list interfaces with `ip link`")]
    UnknownInterface { iface: String },
    #[error(
        "interface {iface} already has an XDP program attached; detach it (`ip link set dev \
         {iface} xdp off`) or stop the program that owns it"
    )]
    XdpBusy { iface: String },
    #[error(
        "attaching XDP in {mode} mode to {iface} failed: {source}; try --xdp-mode skb \
         (generic) if the driver has no native XDP"
    )]
    XdpAttach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching the TC egress program to {iface} failed: {source}")]
    TcAttach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("more than {max} interfaces; the object has {max} totals slots")]
    TooManyInterfaces { max: u32 },
    #[error("updating map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("persistent mode (--pin-path) is not available in this build")]
    PinUnsupported,
    #[error(transparent)]
    Drain(#[from] DrainError),
}

/// One watched interface.
#[derive(Debug)]
struct Attachment {
    info: AttachInfo,
    xdp: Option<aya::programs::xdp::XdpLinkId>,
    tc: Option<SchedClassifierLinkId>,
}

/// A change [`Sensor::reconcile`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfaceChange {
    /// The interface no longer exists; its programs went with it.
    Vanished { iface: String },
    /// The interface is back (or was replaced) and is attached again.
    Reattached {
        iface: String,
        ifindex: u32,
        xdp_mode: &'static str,
    },
    /// The interface is back but attaching failed; retried next time.
    AttachFailed { iface: String, error: String },
}

/// Slot number -> (ifindex, interface name), shared with the drainer.
pub type SlotTable = Arc<Mutex<BTreeMap<u32, (u32, String)>>>;

/// The loaded object and its attachments.
pub struct Sensor {
    ebpf: Ebpf,
    opts: LoadOptions,
    slots_map: BpfHashMap<MapData, u32, u32>,
    slots: SlotTable,
    attachments: Vec<Attachment>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Names of the capabilities the sensor needs and lacks (empty when fine).
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
pub fn missing_capabilities() -> Vec<&'static str> {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

fn program_error(program: &'static str, e: ProgramError) -> LoadError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            debug!(program, "verifier log:\n{log}");
            LoadError::Verifier {
                program,
                io_error,
                log,
            }
        }
        source => LoadError::Program { program, source },
    }
}

impl Sensor {
    /// Loads and verifies the programs without attaching them.
    pub fn load(opts: &LoadOptions) -> Result<Sensor, LoadError> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(LoadError::MissingCapabilities {
                missing: missing.join(", "),
            });
        }
        if opts.pin_path.is_some() {
            return Err(LoadError::PinUnsupported);
        }
        if OBJECT.is_empty() {
            return Err(LoadError::ObjectMissing);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_FLOWS_A, opts.flow_map_entries)
            .map_max_entries(MAP_FLOWS_B, opts.flow_map_entries)
            .load(OBJECT)
            .map_err(|source| match source {
                EbpfError::ProgramError(e) => program_error("object", e),
                source => LoadError::Object { source },
            })?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!("eBPF log records unavailable: {e}");
                None
            }
        };
        let xdp: &mut Xdp = prog(&mut ebpf, PROG_XDP)?;
        xdp.load().map_err(|e| program_error(PROG_XDP, e))?;
        let tc: &mut SchedClassifier = prog(&mut ebpf, PROG_TC)?;
        tc.load().map_err(|e| program_error(PROG_TC, e))?;
        let slots_map = ebpf.take_map(MAP_IFACE_SLOTS).ok_or(LoadError::Missing {
            what: "map",
            name: MAP_IFACE_SLOTS,
        })?;
        let slots_map = BpfHashMap::try_from(slots_map).map_err(|source| LoadError::Map {
            map: MAP_IFACE_SLOTS,
            source,
        })?;
        info!(
            flow_map_entries = opts.flow_map_entries,
            "programs loaded and verified"
        );
        Ok(Sensor {
            ebpf,
            opts: opts.clone(),
            slots_map,
            slots: Arc::default(),
            attachments: Vec::new(),
            logger,
        })
    }

    /// Attaches XDP (ingress) and TC (egress) to `iface`.
    pub fn attach(&mut self, iface: &str) -> Result<AttachInfo, LoadError> {
        let ifindex = ifindex(iface)?;
        let slot = self.assign_slot(ifindex, iface)?;
        let mut att = Attachment {
            info: AttachInfo {
                iface: iface.to_string(),
                ifindex,
                ..AttachInfo::default()
            },
            xdp: None,
            tc: None,
        };
        let (link, mode) = self.attach_xdp(iface)?;
        att.xdp = Some(link);
        att.info.xdp_mode = mode;
        att.info.xdp_attached = true;
        let tc: &mut SchedClassifier = prog(&mut self.ebpf, PROG_TC)?;
        let link = match tc.attach(iface, TcAttachType::Egress) {
            Ok(l) => l,
            Err(_) => {
                // Older kernels (no TCX): netlink needs a clsact qdisc.
                let _ = tc::qdisc_add_clsact(iface);
                match tc.attach(iface, TcAttachType::Egress) {
                    Ok(l) => l,
                    Err(source) => {
                        self.detach_one(&mut att);
                        return Err(LoadError::TcAttach {
                            iface: iface.to_string(),
                            source,
                        });
                    }
                }
            }
        };
        att.tc = Some(link);
        att.info.tc_attached = true;
        info!(iface, ifindex, slot, xdp_mode = mode, "attached");
        let info = att.info.clone();
        self.attachments.push(att);
        Ok(info)
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
    ) -> Result<(aya::programs::xdp::XdpLinkId, &'static str), LoadError> {
        let setting = self.opts.xdp_mode;
        let xdp: &mut Xdp = prog(&mut self.ebpf, PROG_XDP)?;
        let busy = |e: &ProgramError| {
            matches!(e, ProgramError::SyscallError(s)
                if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)))
        };
        let try_mode = |xdp: &mut Xdp, mode: XdpMode, name: &'static str| {
            xdp.attach(iface, mode).map_err(|e| {
                if busy(&e) {
                    LoadError::XdpBusy {
                        iface: iface.to_string(),
                    }
                } else {
                    LoadError::XdpAttach {
                        iface: iface.to_string(),
                        mode: name,
                        source: e,
                    }
                }
            })
        };
        match setting {
            XdpModeSetting::Native => {
                try_mode(xdp, XdpMode::Driver, "native").map(|l| (l, "native"))
            }
            XdpModeSetting::Skb => try_mode(xdp, XdpMode::Skb, "skb").map(|l| (l, "skb")),
            XdpModeSetting::Auto => match try_mode(xdp, XdpMode::Driver, "native") {
                Ok(l) => Ok((l, "native")),
                Err(e @ LoadError::XdpBusy { .. }) => Err(e),
                Err(e) => {
                    warn!(
                        iface,
                        "native XDP unavailable ({e}); falling back to generic (skb) mode"
                    );
                    try_mode(xdp, XdpMode::Skb, "skb").map(|l| (l, "skb"))
                }
            },
        }
    }

    fn assign_slot(&mut self, ifindex: u32, iface: &str) -> Result<u32, LoadError> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The same interface name keeps its slot when it comes back with a
        // new index, so its cumulative totals carry on.
        let existing = slots
            .iter()
            .find(|(_, (i, n))| *i == ifindex || n == iface)
            .map(|(s, (i, _))| (*s, *i));
        if let Some((_, old)) = existing.filter(|(_, old)| *old != ifindex) {
            let _ = self.slots_map.remove(&old);
        }
        let slot = match existing {
            Some((s, _)) => s,
            None => (1..MAX_IFACE_SLOTS)
                .find(|s| !slots.contains_key(s))
                .ok_or(LoadError::TooManyInterfaces {
                    max: MAX_IFACE_SLOTS - 1,
                })?,
        };
        self.slots_map
            .insert(ifindex, slot, 0)
            .map_err(|source| LoadError::Map {
                map: MAP_IFACE_SLOTS,
                source,
            })?;
        slots.insert(slot, (ifindex, iface.to_string()));
        Ok(slot)
    }

    fn detach_one(&mut self, att: &mut Attachment) {
        if let Some(id) = att.xdp.take() {
            if let Ok(xdp) = prog::<Xdp>(&mut self.ebpf, PROG_XDP) {
                if let Err(e) = xdp.detach(id) {
                    warn!(iface = att.info.iface, "detaching XDP: {e}");
                }
            }
        }
        if let Some(id) = att.tc.take() {
            if let Ok(tc) = prog::<SchedClassifier>(&mut self.ebpf, PROG_TC) {
                if let Err(e) = tc.detach(id) {
                    warn!(iface = att.info.iface, "detaching TC: {e}");
                }
            }
        }
        att.info.xdp_attached = false;
        att.info.tc_attached = false;
    }

    /// Checks every attached interface: one that vanished is marked
    /// detached, one that came back (same name, possibly a new index) is
    /// attached again. Returns what changed, for the log.
    pub fn reconcile(&mut self) -> Vec<IfaceChange> {
        let mut changes = Vec::new();
        let mut atts = std::mem::take(&mut self.attachments);
        for att in &mut atts {
            let name = att.info.iface.clone();
            let now = ifindex(&name).ok();
            let attached = att.info.xdp_attached && att.info.tc_attached;
            match now {
                Some(i) if i == att.info.ifindex && attached => {}
                None if !attached => {}
                None => {
                    // The kernel detached our links with the device; drop
                    // our handles to them.
                    self.detach_one(att);
                    changes.push(IfaceChange::Vanished { iface: name });
                }
                Some(i) => {
                    if attached {
                        // Same name, new device: the old links went with
                        // the old device.
                        self.detach_one(att);
                    }
                    match self.attach(&name) {
                        Ok(info) => {
                            // `attach` pushed a fresh record; keep this one.
                            if let Some(fresh) = self.attachments.pop() {
                                *att = fresh;
                            }
                            changes.push(IfaceChange::Reattached {
                                iface: name,
                                ifindex: i,
                                xdp_mode: info.xdp_mode,
                            });
                        }
                        Err(e) => changes.push(IfaceChange::AttachFailed {
                            iface: name,
                            error: e.to_string(),
                        }),
                    }
                }
            }
        }
        atts.append(&mut self.attachments);
        self.attachments = atts;
        changes
    }

    /// Current attachments.
    pub fn attachments(&self) -> Vec<AttachInfo> {
        self.attachments.iter().map(|a| a.info.clone()).collect()
    }

    /// Detaches every program.
    pub fn detach_all(&mut self) {
        let mut atts = std::mem::take(&mut self.attachments);
        for att in &mut atts {
            self.detach_one(att);
            info!(iface = att.info.iface, "detached");
        }
    }

    /// Run statistics of both programs (present when BPF stats are enabled).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        [(PROG_XDP, "xdp"), (PROG_TC, "tc")]
            .into_iter()
            .map(|(name, label)| {
                let info = self.ebpf.program(name).and_then(|p| p.info().ok());
                let (t, c) = match (stats_on, info) {
                    (true, Some(i)) => (Some(i.run_time().as_nanos() as u64), Some(i.run_count())),
                    _ => (None, None),
                };
                ProgramStats {
                    program: label,
                    run_time_ns: t,
                    run_count: c,
                }
            })
            .collect()
    }

    /// Forwards pending eBPF log records to the log.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Flow buffer capacity.
    pub fn flow_map_entries(&self) -> u32 {
        self.opts.flow_map_entries
    }

    /// The drainer for this object's maps. Call once.
    pub fn drainer(&mut self) -> Result<Drainer, LoadError> {
        Ok(Drainer::new(
            &mut self.ebpf,
            self.slots.clone(),
            self.opts.flow_map_entries,
        )?)
    }

    /// The underlying object (tests and benchmarks run its programs).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Registers an interface's totals slot without attaching (tests that
    /// drive the programs through BPF_PROG_TEST_RUN).
    pub fn register_slot(&mut self, ifindex: u32, name: &str) -> Result<u32, LoadError> {
        self.assign_slot(ifindex, name)
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(LoadError::Missing {
        what: "program",
        name,
    })?;
    p.try_into().map_err(|source| LoadError::Program {
        program: name,
        source,
    })
}

/// The index of an interface by name.
pub fn ifindex(iface: &str) -> Result<u32, LoadError> {
    let c = std::ffi::CString::new(iface).map_err(|_| LoadError::UnknownInterface {
        iface: iface.to_string(),
    })?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(LoadError::UnknownInterface {
            iface: iface.to_string(),
        });
    }
    Ok(i)
}
