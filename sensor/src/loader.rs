//! Loading the eBPF object, attaching and detaching programs.
//!
//! [`Sensor::load`] checks privileges, loads and verifies both programs and
//! sizes the flow buffers. [`Sensor::attach`] gives the interface a totals
//! slot, then attaches XDP (ingress) and TC (egress). Every error says what
//! to try next.
//!
//! Persistent mode (`--pin-path DIR`, a bpffs directory): the five maps are
//! pinned as `DIR/<MAP>` and reused by the next load, and every link is
//! pinned as `DIR/links/<iface>@<kind>` (`xdp-native`, `xdp-skb`, `tc`;
//! bpffs refuses dots, so a `.` in the name is written `%2E`).
//! A restarted agent loads fresh programs and swaps them into the pinned
//! links atomically (`bpf_link_update`), so the old programs count until
//! the new ones take over, into the same maps. Exiting leaves everything
//! attached; removing `DIR` detaches it. A link whose device went away is
//! unpinned and the interface attached anew when it is back.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, MapInfo, MapType},
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, SchedClassifierLinkId, TcAttachType},
        xdp::XdpLink,
        ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use sensor_common::{
    Control, FlowKey, FlowValue, Totals, IFACE_INDEX_ENTRIES, MAP_CONTROL, MAP_FLOWS_A,
    MAP_FLOWS_B, MAP_IFACE_INDEX, MAP_IFACE_SLOTS, MAP_NAMES, MAP_TOTALS, MAX_IFACE_SLOTS, PROG_TC,
    PROG_XDP,
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
    #[error(
        "persistent mode: {path}: {reason}; --pin-path must be a directory on a bpffs mount \
         (mount -t bpf bpf /sys/fs/bpf)"
    )]
    PinPath { path: PathBuf, reason: String },
    #[error(
        "persistent mode: the pinned map {path} is {found}, this sensor needs {want}; it was \
         made by an incompatible sensor version. Remove the pin directory (this detaches the \
         old programs) and start again"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: String,
        want: String,
    },
    #[error("persistent mode: pinning {what} at {path}: {reason}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Drain(#[from] DrainError),
}

/// A link the sensor holds: owned by the program (detached with it), or
/// pinned (attached for as long as the pin exists).
#[derive(Debug)]
enum Held<Id> {
    Owned(Id),
    Pinned(PathBuf),
}

/// One watched interface.
#[derive(Debug)]
struct Attachment {
    info: AttachInfo,
    xdp: Option<Held<aya::programs::xdp::XdpLinkId>>,
    tc: Option<Held<SchedClassifierLinkId>>,
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
    /// Persistent mode's pin directory.
    pins: Option<PathBuf>,
    slots_map: BpfHashMap<MapData, u32, u32>,
    /// The array fast path of `slots_map` for small interface indexes.
    index_map: Array<MapData, u32>,
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
        if OBJECT.is_empty() {
            return Err(LoadError::ObjectMissing);
        }
        let mut opts = opts.clone();
        let mut loader = EbpfLoader::new();
        let map_pins: Vec<(&str, PathBuf)> = match &opts.pin_path {
            Some(dir) => {
                if let Some(n) = prepare_pins(dir)? {
                    if n != opts.flow_map_entries {
                        warn!(
                            pinned = n,
                            requested = opts.flow_map_entries,
                            "the pinned flow buffers keep their size; remove the pin \
                             directory to resize them"
                        );
                        opts.flow_map_entries = n;
                    }
                }
                MAP_NAMES.iter().map(|&m| (m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
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
        let mut slots_map = BpfHashMap::try_from(slots_map).map_err(|source| LoadError::Map {
            map: MAP_IFACE_SLOTS,
            source,
        })?;
        info!(
            flow_map_entries = opts.flow_map_entries,
            persistent = opts.pin_path.is_some(),
            "programs loaded and verified"
        );
        let index_map = ebpf.take_map(MAP_IFACE_INDEX).ok_or(LoadError::Missing {
            what: "map",
            name: MAP_IFACE_INDEX,
        })?;
        let mut index_map = Array::try_from(index_map).map_err(|source| LoadError::Map {
            map: MAP_IFACE_INDEX,
            source,
        })?;
        let mut slots = BTreeMap::new();
        if opts.pin_path.is_some() {
            // Slots of interfaces attached before the restart keep their
            // cumulative totals; those of devices now gone are dropped.
            let known: Vec<(u32, u32)> = slots_map.iter().filter_map(Result::ok).collect();
            for (ifindex, slot) in known {
                match ifname(ifindex) {
                    Some(name) => {
                        slots.insert(slot, (ifindex, name));
                    }
                    None => {
                        let _ = slots_map.remove(&ifindex);
                        if ifindex < IFACE_INDEX_ENTRIES {
                            let _ = index_map.set(ifindex, 0, 0);
                        }
                    }
                }
            }
        }
        Ok(Sensor {
            ebpf,
            pins: opts.pin_path.clone(),
            opts,
            slots_map,
            index_map,
            slots: Arc::new(Mutex::new(slots)),
            attachments: Vec::new(),
            logger,
        })
    }

    /// Persistent mode: kernel ids of the pinned FLOWS_A, FLOWS_B and
    /// CONTROL maps, which identify the journal that belongs to them.
    pub fn pin_identity(&self) -> Option<[u32; 3]> {
        let dir = self.pins.as_ref()?;
        let id = |m: &str| MapInfo::from_pin(dir.join(m)).map(|i| i.id()).unwrap_or(0);
        Some([id(MAP_FLOWS_A), id(MAP_FLOWS_B), id(MAP_CONTROL)])
    }

    /// True in persistent mode.
    pub fn is_persistent(&self) -> bool {
        self.pins.is_some()
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
        if let Some(dir) = self.pins.clone() {
            let r = self.attach_pinned(&dir, iface, ifindex, &mut att);
            if let Err(e) = r {
                self.detach_one(&mut att, true);
                return Err(e);
            }
            info!(
                iface,
                ifindex,
                slot,
                xdp_mode = att.info.xdp_mode,
                "attached (pinned)"
            );
            let info = att.info.clone();
            self.attachments.push(att);
            return Ok(info);
        }
        let (link, mode) = self.attach_xdp(iface)?;
        att.xdp = Some(Held::Owned(link));
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
                        self.detach_one(&mut att, true);
                        return Err(LoadError::TcAttach {
                            iface: iface.to_string(),
                            source,
                        });
                    }
                }
            }
        };
        att.tc = Some(Held::Owned(link));
        att.info.tc_attached = true;
        info!(iface, ifindex, slot, xdp_mode = mode, "attached");
        let info = att.info.clone();
        self.attachments.push(att);
        Ok(info)
    }

    /// Persistent mode: takes over the interface's pinned links when they
    /// still hold this device, else attaches and pins new ones.
    fn attach_pinned(
        &mut self,
        dir: &Path,
        iface: &str,
        ifindex: u32,
        att: &mut Attachment,
    ) -> Result<(), LoadError> {
        let links = dir.join("links");
        let pin_err = |what: &'static str, path: &Path, e: &dyn std::error::Error| LoadError::Pin {
            what,
            path: path.to_path_buf(),
            reason: error_chain(e),
        };
        // XDP: the pin name records the mode the link was made in.
        let mut xdp_done = false;
        for mode in ["native", "skb"] {
            let path = links.join(format!("{}@xdp-{mode}", pin_name(iface)));
            let Some(old) = open_pinned(&path, ifindex) else {
                continue;
            };
            let link = XdpLink::try_from(old).map_err(|e| pin_err("the XDP link", &path, &e))?;
            let xdp: &mut Xdp = prog(&mut self.ebpf, PROG_XDP)?;
            let id = xdp
                .attach_to_link(link)
                .map_err(|e| pin_err("the XDP link (program replacement)", &path, &e))?;
            // The pin keeps the link; the program's copy of the fd can go.
            drop(xdp.take_link(id));
            att.xdp = Some(Held::Pinned(path));
            att.info.xdp_mode = mode;
            xdp_done = true;
            break;
        }
        if !xdp_done {
            let (id, mode) = self.attach_xdp(iface)?;
            let path = links.join(format!("{}@xdp-{mode}", pin_name(iface)));
            let xdp: &mut Xdp = prog(&mut self.ebpf, PROG_XDP)?;
            let link = xdp
                .take_link(id)
                .map_err(|e| pin_err("the XDP link", &path, &e))?;
            let fd = FdLink::try_from(link).map_err(|e| LoadError::Pin {
                what: "the XDP link",
                path: path.clone(),
                reason: format!(
                    "{} (persistent mode needs bpf_link-based XDP, Linux 5.9+)",
                    error_chain(&e)
                ),
            })?;
            fd.pin(&path)
                .map_err(|e| pin_err("the XDP link", &path, &e))?;
            att.xdp = Some(Held::Pinned(path));
            att.info.xdp_mode = mode;
        }
        att.info.xdp_attached = true;

        let path = links.join(format!("{}@tc", pin_name(iface)));
        let tc: &mut SchedClassifier = prog(&mut self.ebpf, PROG_TC)?;
        match open_pinned(&path, ifindex) {
            Some(old) => {
                let link = SchedClassifierLink::try_from(old)
                    .map_err(|e| pin_err("the TC link", &path, &e))?;
                let id = tc
                    .attach_to_link(link)
                    .map_err(|e| pin_err("the TC link (program replacement)", &path, &e))?;
                drop(tc.take_link(id));
            }
            None => {
                let id = tc.attach(iface, TcAttachType::Egress).map_err(|source| {
                    LoadError::TcAttach {
                        iface: iface.to_string(),
                        source,
                    }
                })?;
                let link = tc
                    .take_link(id)
                    .map_err(|e| pin_err("the TC link", &path, &e))?;
                let fd = FdLink::try_from(link).map_err(|e| LoadError::Pin {
                    what: "the TC link",
                    path: path.clone(),
                    reason: format!(
                        "{} (persistent mode needs TCX links, Linux 6.6+)",
                        error_chain(&e)
                    ),
                })?;
                fd.pin(&path)
                    .map_err(|e| pin_err("the TC link", &path, &e))?;
            }
        }
        att.tc = Some(Held::Pinned(path));
        att.info.tc_attached = true;
        Ok(())
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
            if old < IFACE_INDEX_ENTRIES {
                let _ = self.index_map.set(old, 0, 0);
            }
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
        if ifindex < IFACE_INDEX_ENTRIES {
            self.index_map
                .set(ifindex, slot, 0)
                .map_err(|source| LoadError::Map {
                    map: MAP_IFACE_INDEX,
                    source,
                })?;
        }
        slots.insert(slot, (ifindex, iface.to_string()));
        Ok(slot)
    }

    /// Detaches an interface's programs. Pinned links stay attached
    /// unless `unpin` (their device is gone, or attaching failed halfway).
    fn detach_one(&mut self, att: &mut Attachment, unpin: bool) {
        match att.xdp.take() {
            Some(Held::Owned(id)) => {
                if let Ok(xdp) = prog::<Xdp>(&mut self.ebpf, PROG_XDP) {
                    if let Err(e) = xdp.detach(id) {
                        warn!(iface = att.info.iface, "detaching XDP: {e}");
                    }
                }
            }
            Some(Held::Pinned(path)) if unpin => remove_pin(&path),
            _ => {}
        }
        match att.tc.take() {
            Some(Held::Owned(id)) => {
                if let Ok(tc) = prog::<SchedClassifier>(&mut self.ebpf, PROG_TC) {
                    if let Err(e) = tc.detach(id) {
                        warn!(iface = att.info.iface, "detaching TC: {e}");
                    }
                }
            }
            Some(Held::Pinned(path)) if unpin => remove_pin(&path),
            _ => {}
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
                    // our handles (and pins) to them.
                    self.detach_one(att, true);
                    changes.push(IfaceChange::Vanished { iface: name });
                }
                Some(i) => {
                    if attached {
                        // Same name, new device: the old links went with
                        // the old device.
                        self.detach_one(att, true);
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

    /// Detaches every program; in persistent mode the pinned links stay
    /// and keep counting.
    pub fn detach_all(&mut self) {
        let mut atts = std::mem::take(&mut self.attachments);
        for att in &mut atts {
            self.detach_one(att, false);
            if self.pins.is_some() {
                info!(iface = att.info.iface, "left attached (persistent mode)");
            } else {
                info!(iface = att.info.iface, "detached");
            }
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

/// Persistent mode: checks the pin directory and any maps pinned there.
/// Returns the pinned flow buffers' capacity when they exist.
fn prepare_pins(dir: &Path) -> Result<Option<u32>, LoadError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let bad = |reason: String| LoadError::PinPath {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir.join("links"))
        .map_err(|e| bad(format!("cannot create it: {e}")))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| bad("contains a NUL byte".into()))?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(bad("is not on a bpffs mount".into()));
    }
    let key = std::mem::size_of::<FlowKey>() as u32;
    let value = std::mem::size_of::<FlowValue>() as u32;
    let shapes: [(&str, MapType, u32, u32, Option<u32>); 6] = [
        (MAP_FLOWS_A, MapType::PerCpuHash, key, value, None),
        (MAP_FLOWS_B, MapType::PerCpuHash, key, value, None),
        (
            MAP_TOTALS,
            MapType::PerCpuArray,
            4,
            std::mem::size_of::<Totals>() as u32,
            Some(MAX_IFACE_SLOTS * 2),
        ),
        (MAP_IFACE_SLOTS, MapType::Hash, 4, 4, None),
        (
            MAP_IFACE_INDEX,
            MapType::Array,
            4,
            4,
            Some(IFACE_INDEX_ENTRIES),
        ),
        (
            MAP_CONTROL,
            MapType::Array,
            4,
            std::mem::size_of::<Control>() as u32,
            Some(1),
        ),
    ];
    let mut flows = None;
    for (name, ty, k, v, n) in shapes {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| LoadError::Pin {
            what: "reading a pinned map",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let found_ty = info.map_type().ok();
        let ok = found_ty == Some(ty)
            && info.key_size() == k
            && info.value_size() == v
            && n.is_none_or(|n| info.max_entries() == n);
        if !ok {
            return Err(LoadError::IncompatiblePin {
                path,
                found: format!(
                    "{found_ty:?} key {} value {} entries {}",
                    info.key_size(),
                    info.value_size(),
                    info.max_entries()
                ),
                want: format!("{ty:?} key {k} value {v}"),
            });
        }
        if name == MAP_FLOWS_A {
            flows = Some(info.max_entries());
        }
    }
    Ok(flows)
}

/// Opens a pinned link if it still holds device `ifindex`; removes a pin
/// whose device is gone or replaced (the kernel already detached it).
fn open_pinned(path: &Path, ifindex: u32) -> Option<FdLink> {
    if !path.exists() {
        return None;
    }
    let held =
        crate::bpf_sys::obj_get(path).and_then(|fd| crate::bpf_sys::link_ifindex(fd.as_fd()));
    match held {
        Ok(i) if i == ifindex => match PinnedLink::from_pin(path) {
            Ok(l) => Some(FdLink::from(l)),
            Err(e) => {
                warn!(path = %path.display(), "unreadable pinned link ({e}); replacing it");
                remove_pin(path);
                None
            }
        },
        Ok(i) => {
            info!(path = %path.display(), was = i, now = ifindex, "pinned link belongs to a device that is gone; replacing it");
            remove_pin(path);
            None
        }
        Err(e) => {
            warn!(path = %path.display(), "cannot query pinned link ({e}); replacing it");
            remove_pin(path);
            None
        }
    }
}

/// An interface name as a bpffs file name: bpffs refuses dots (they are
/// reserved for its own files), so `.` becomes `%2E` and `%` becomes `%25`.
fn pin_name(iface: &str) -> String {
    iface.replace('%', "%25").replace('.', "%2E")
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn remove_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), "removing pin: {e}");
        }
    }
}

/// The name of an interface by index, if it exists.
fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
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
