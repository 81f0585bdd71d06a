//! Network namespaces and veth pairs made by a test, removed when the guard
//! drops (also while a failing test unwinds). Names start with `st-` so
//! `cargo xtask test` can sweep leftovers of a killed run.

use std::{
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A namespace `peer` joined to the root namespace by a veth pair:
/// `host` (root side, 198.18.N.1/24, 2001:db8:N::1/64) and `peer_if`
/// (namespace side, .2 / ::2).
pub struct VethPair {
    pub ns: String,
    pub host: String,
    pub peer_if: String,
    pub host_v4: String,
    pub peer_v4: String,
    pub host_v6: String,
    pub peer_v6: String,
    pub net: u32,
}

impl VethPair {
    pub fn new() -> VethPair {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let net = (pid * 7 + n) % 200 + 10;
        let ns = format!("st-{pid}-{n}");
        let host = format!("st-{pid}h{n}");
        let peer_if = format!("st-{pid}p{n}");
        let pair = VethPair {
            ns: ns.clone(),
            host: host.clone(),
            peer_if: peer_if.clone(),
            host_v4: format!("198.18.{net}.1"),
            peer_v4: format!("198.18.{net}.2"),
            host_v6: format!("2001:db8:{net:x}::1"),
            peer_v6: format!("2001:db8:{net:x}::2"),
            net,
        };
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer_if, "netns", &ns,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.host_v4),
            "dev",
            &host,
        ]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", pair.host_v6),
            "dev",
            &host,
            "nodad",
        ]);
        sh(&["ip", "link", "set", &host, "up"]);
        pair.ns_sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.peer_v4),
            "dev",
            &peer_if,
        ]);
        pair.ns_sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", pair.peer_v6),
            "dev",
            &peer_if,
            "nodad",
        ]);
        pair.ns_sh(&["ip", "link", "set", &peer_if, "up"]);
        pair.ns_sh(&["ip", "link", "set", "lo", "up"]);
        pair
    }

    /// Runs a command inside the namespace, panicking on failure.
    pub fn ns_sh(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A command to run inside the namespace.
    pub fn ns_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c.stdin(Stdio::null());
        c
    }
}

/// The MAC address of an interface (inside `ns` when given).
pub fn mac(ns: Option<&str>, iface: &str) -> String {
    let path = format!("/sys/class/net/{iface}/address");
    let out = match ns {
        Some(ns) => sh(&["ip", "netns", "exec", ns, "cat", &path]),
        None => sh(&["cat", &path]),
    };
    String::from_utf8(out.stdout)
        .expect("mac")
        .trim()
        .to_string()
}

/// Permanent neighbour entries on both ends of `host_if` / `peer_if` for
/// each (host address, peer address), so no ARP or ND frame can appear at a
/// random time during a comparison.
pub fn pin_neighbours(p: &VethPair, host_if: &str, peer_if: &str, pairs: &[(&str, &str)]) {
    let hmac = mac(None, host_if);
    let pmac = mac(Some(&p.ns), peer_if);
    for (host_ip, peer_ip) in pairs {
        sh(&[
            "ip",
            "neigh",
            "replace",
            peer_ip,
            "lladdr",
            &pmac,
            "dev",
            host_if,
            "nud",
            "permanent",
        ]);
        p.ns_sh(&[
            "ip",
            "neigh",
            "replace",
            host_ip,
            "lladdr",
            &hmac,
            "dev",
            peer_if,
            "nud",
            "permanent",
        ]);
    }
}

/// Received and transmitted packets of an interface, from its own counters.
pub fn link_packets(iface: &str) -> (u64, u64) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (read("rx_packets"), read("tx_packets"))
}

/// Waits until the interface has been silent for 300 ms (30 s at most).
pub fn quiesce(iface: &str) {
    let mut last = link_packets(iface);
    let mut still = 0;
    wait_for("the interface to go quiet", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = link_packets(iface);
        if now == last {
            still += 1;
        } else {
            still = 0;
            last = now;
        }
        still >= 3
    });
}

impl VethPair {
    /// Turns IPv6 off on both ends, so router solicitations and MLD
    /// reports, which come at times of their own, never cross the pair.
    pub fn disable_ipv6(&self) {
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", self.host),
        ]);
        self.ns_sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", self.peer_if),
        ]);
    }

    /// [`pin_neighbours`] for the pair's own IPv4 and IPv6 addresses.
    pub fn pin_own_neighbours(&self) {
        pin_neighbours(
            self,
            &self.host,
            &self.peer_if,
            &[
                (&self.host_v4, &self.peer_v4),
                (&self.host_v6, &self.peer_v6),
            ],
        );
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting the namespace removes the peer end and with it the pair.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Moves the calling thread into network namespace `ns` (made by `ip netns
/// add`); the rest of the process stays where it is. For a helper thread
/// that sends from inside a test's namespace.
pub fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("opening /run/netns/{ns}: {e}"));
    // SAFETY: a valid namespace fd; setns affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}
