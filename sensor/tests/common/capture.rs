//! tshark as the reference counter: capture on an interface, then read the
//! capture back as per-flow packet and byte counts.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// (vlan, src, dst, protocol, src port or ICMP type, dst port or ICMP code)
pub type Key = (u16, IpAddr, IpAddr, u8, u16, u16);

/// Packets and bytes per flow key, plus frames with no IP flow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub flows: BTreeMap<Key, (u64, u64)>,
    pub non_ip_frames: u64,
    pub frames: u64,
    pub bytes: u64,
}

pub struct Capture {
    child: Child,
    pub file: PathBuf,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Capture {
    /// Starts tshark on `iface` and returns once it has captured a frame
    /// that `probe` sent: tshark announces "Capturing on" before its
    /// capture child really is. Exclude the probe's flow when comparing.
    pub fn start(iface: &str, mut probe: impl FnMut()) -> Capture {
        let file = std::env::temp_dir().join(format!("st-{}-{iface}.pcapng", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut child = Command::new("tshark")
            .args(["-i", iface, "-B", "64", "-l", "-P", "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tshark (installed by `cargo xtask test`)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("tshark did not start capturing within 20 s");
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stdout = child.stdout.take().expect("stdout");
        let counter = seen.clone();
        std::thread::spawn(move || {
            for _ in BufReader::new(stdout).lines().map_while(Result::ok) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "tshark captured none of the probes within 20 s"
            );
            probe();
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture { child, file, seen }
    }

    /// Stops the capture (SIGINT, so tshark flushes) and reads it back.
    pub fn finish(mut self) -> Counts {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("tshark exit");
        assert!(
            status.success() || status.code().is_none(),
            "tshark: {status}"
        );
        read(&self.file)
    }
}

impl Capture {
    /// Frames tshark has reported so far.
    pub fn frames_seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn read(file: &PathBuf) -> Counts {
    let fields = [
        "frame.len",
        "ieee8021ad.id",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "ip.proto",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "icmp.type",
        "icmp.code",
        "icmpv6.type",
        "icmpv6.code",
        "ip.frag_offset",
        "vlan.id",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args([
        // Count wire frames: no reassembly, each fragment as it came.
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark -r");
    assert!(
        out.status.success(),
        "tshark -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Counts::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Vec<&str> = line.split('|').collect();
        let len: u64 = v[0].parse().expect("frame.len");
        c.frames += 1;
        c.bytes += len;
        // The outermost tag: 802.1ad if present, else 802.1Q.
        let vlan: u16 = v[1].parse().or_else(|_| v[16].parse()).unwrap_or(0);
        let (src, dst) = match (v[2], v[3], v[4], v[5]) {
            (s, d, _, _) if !s.is_empty() => (s, d),
            (_, _, s, d) if !s.is_empty() => (s, d),
            _ => {
                c.non_ip_frames += 1;
                continue;
            }
        };
        let n = |s: &str| s.parse::<u16>().unwrap_or(0);
        let later_fragment = n(v[15]) != 0;
        let (proto, sp, dp) = if later_fragment {
            (v[6].parse().unwrap_or(0), 0, 0)
        } else if !v[13].is_empty() {
            // ICMP first: an ICMP error quotes a TCP or UDP header that
            // tshark dissects too.
            (58, n(v[13]), n(v[14]))
        } else if !v[11].is_empty() {
            (1, n(v[11]), n(v[12]))
        } else if !v[7].is_empty() {
            (6, n(v[7]), n(v[8]))
        } else if !v[9].is_empty() {
            (17, n(v[9]), n(v[10]))
        } else {
            (v[6].parse().unwrap_or(0), 0, 0)
        };
        let key = (
            vlan,
            src.parse().expect("src address"),
            dst.parse().expect("dst address"),
            proto,
            sp,
            dp,
        );
        let e = c.flows.entry(key).or_default();
        e.0 += 1;
        e.1 += len;
    }
    c
}

/// Writes frames as a classic pcap file (Ethernet link type), for tcpreplay.
pub fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("writing pcap");
}
