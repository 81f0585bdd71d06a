//! Deployment tests: the files under `deploy/` pass their offline checks,
//! and the sensor works with exactly the capabilities the systemd unit
//! grants, as a non-root user, on a veth pair with real traffic.
//!
//! - `deploy_checks_pass`: `deploy/check.sh` (systemd-analyze verify and
//!   security, hadolint, kubernetes-validate, cross-file consistency), then
//!   `sensor check` parses the example config and the ConfigMap's config
//!   under the unit's capability set;
//! - `unit_capability_set_runs_the_sensor`: the unit's capabilities (parsed
//!   from `deploy/systemd/sensor.service`, so unit and test cannot drift) as
//!   ambient capabilities of uid 65534 with no_new_privs: attached, counts
//!   traffic, reads BPF run statistics, writes flow records, exits 0;
//! - `each_missing_capability_is_named`: the same with one capability
//!   removed exits 1 naming it, and attaches nothing;
//! - `file_capabilities_as_in_the_image`: the container image's model (file
//!   capabilities on the binary, no ambient ones): works without
//!   no_new_privs, fails naming the capabilities under it.
//!
//! Needs root (to hand out capabilities and make veth pairs), setpriv and
//! setcap (util-linux, libcap2-bin), systemd-analyze, python3-venv and PyPI
//! access the first time (`deploy/check.sh` caches its tools).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use common::netns::{sh, wait_for, VethPair};

/// The unprivileged user of the capability runs (nobody).
const RUN_UID: &str = "65534";
/// The image's user (`USER 65532:65532` in the Dockerfile).
const IMAGE_UID: &str = "65532";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn sensor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sensor")
}

/// Capability names (e.g. `bpf`) of `AmbientCapabilities=` in the unit,
/// after checking that the bounding set is the same.
fn unit_caps() -> Vec<String> {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/sensor.service"))
        .expect("read deploy/systemd/sensor.service");
    let list = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = unit
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|rest| rest.split_whitespace())
            .map(|c| {
                c.strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("{key}: {c} lacks the CAP_ prefix"))
                    .to_ascii_lowercase()
            })
            .collect();
        v.sort();
        v
    };
    let ambient = list("AmbientCapabilities=");
    assert!(!ambient.is_empty(), "the unit has no AmbientCapabilities=");
    assert_eq!(
        ambient,
        list("CapabilityBoundingSet="),
        "AmbientCapabilities= and CapabilityBoundingSet= differ"
    );
    ambient
}

/// `+a,+b` for setpriv.
fn plus(caps: &[String]) -> String {
    caps.iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A command that runs `program` as `RUN_UID` with exactly `caps` as its
/// ambient, inheritable and bounding sets and no_new_privs, like the unit.
fn as_unit(caps: &[String], program: &str) -> Command {
    let p = plus(caps);
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={RUN_UID}"),
        &format!("--regid={RUN_UID}"),
        "--clear-groups",
        &format!("--inh-caps=-all,{p}"),
        &format!("--ambient-caps=-all,{p}"),
        &format!("--bounding-set=-all,{p}"),
        "--no-new-privs",
        program,
    ]);
    c.stdin(Stdio::null());
    c
}

/// A temporary directory every user may enter and write (the runs are not
/// root), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("st-deploy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        sh(&["chmod", "1777", p.to_str().expect("utf-8 temp path")]);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sensor process; killed on drop if the test fails before it exits.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Restores `kernel.bpf_stats_enabled` on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> BpfStats {
        let old = std::fs::read_to_string(Self::PATH).expect("read bpf_stats_enabled");
        std::fs::write(Self::PATH, "1").expect("enable bpf stats");
        BpfStats(old.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// GET `path`; (status, body), or None when nothing listens yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of the series `name{labels}` (labels in the exporter's order).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Capability bit numbers of the names the tests use.
fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "net_admin" => 1u64 << 12,
            "sys_admin" => 1 << 21,
            "perfmon" => 1 << 38,
            "bpf" => 1 << 39,
            other => panic!("capability {other} unknown to this test: add its number"),
        })
        .fold(0, |a, b| a | b)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deploy_checks_pass() {
    let tmp = TempDir::new("check");
    let out = Command::new(repo().join("deploy/check.sh"))
        .args(["--sensor", sensor_bin()])
        .env("SENSOR_DEPLOY_OUT", &tmp.0)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/check.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(out.status.success(), "deploy/check.sh failed:\n{text}");
    assert!(
        text.contains("all checks passed"),
        "check.sh output:\n{text}"
    );

    // Both configuration files parse and load under the unit's capability
    // set; copies, so the unprivileged user can read them wherever the
    // repository lives.
    let caps = unit_caps();
    let example = tmp.0.join("sensor.toml");
    std::fs::copy(repo().join("deploy/systemd/sensor.toml"), &example).expect("copy");
    for config in [example, tmp.0.join("k8s-sensor.toml")] {
        sh(&["chmod", "0644", config.to_str().expect("utf-8")]);
        let out = as_unit(&caps, sensor_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run sensor check");
        assert!(
            out.status.success(),
            "sensor check --config {} failed with {:?}:\n{}",
            config.display(),
            out.status.code(),
            stderr_of(&out)
        );
    }
}

#[test]
fn unit_capability_set_runs_the_sensor() {
    let caps = unit_caps();
    let pair = VethPair::new();
    let tmp = TempDir::new("run");
    let flows = tmp.0.join("flows.jsonl");
    let port = free_port();
    let _stats = BpfStats::enable();
    // The example config, with what is host-specific overridden by flags
    // (flags win over the file).
    let example = tmp.0.join("sensor.toml");
    std::fs::copy(repo().join("deploy/systemd/sensor.toml"), &example).expect("copy");
    sh(&["chmod", "0644", example.to_str().expect("utf-8")]);
    let child = as_unit(&caps, sensor_bin())
        .args(["run", "--config"])
        .arg(&example)
        .args(["--iface", &pair.host, "--interval", "200ms"])
        .args(["--listen-address", &format!("127.0.0.1:{port}")])
        .arg("--flows-file")
        .arg(&flows)
        .args(["--events", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensor under setpriv");
    let pid = child.id();
    let mut running = Running(Some(child));

    wait_for("/-/ready to answer 200", Duration::from_secs(20), || {
        if let Some(Ok(Some(status))) = running.0.as_mut().map(|c| c.try_wait()) {
            panic!("the sensor exited early with {status}");
        }
        matches!(http_get(port, "/-/ready"), Some((200, _)))
    });
    // Exactly the unit's capabilities, as the unprivileged user (setpriv
    // execs the sensor, so the pid is the sensor's).
    let want = format!("{:016x}", cap_mask(&caps));
    assert_eq!(status_field(pid, "CapEff:"), want, "effective capabilities");
    assert_eq!(status_field(pid, "CapBnd:"), want, "bounding set");
    assert!(
        status_field(pid, "Uid:").starts_with(RUN_UID),
        "not running as {RUN_UID}"
    );
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");

    let pings = 20u32;
    pair.ns_sh(&[
        "ping",
        "-c",
        &pings.to_string(),
        "-i",
        "0.01",
        "-q",
        &pair.host_v4,
    ]);
    let ingress = format!(
        "sensor_packets_total{{direction=\"ingress\",iface=\"{}\"}}",
        pair.host
    );
    let egress = format!(
        "sensor_packets_total{{direction=\"egress\",iface=\"{}\"}}",
        pair.host
    );
    let mut metrics = String::new();
    wait_for(
        "the pings in sensor_packets_total (both directions)",
        Duration::from_secs(10),
        || {
            metrics = http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            sample(&metrics, &ingress).unwrap_or(0.0) >= f64::from(pings)
                && sample(&metrics, &egress).unwrap_or(0.0) >= f64::from(pings)
        },
    );
    for program in ["xdp", "tc"] {
        let series = format!(
            "sensor_program_attached{{iface=\"{}\",program=\"{program}\"}}",
            pair.host
        );
        assert_eq!(sample(&metrics, &series), Some(1.0), "{series}\n{metrics}");
    }
    // Reading the kernel's run statistics works with the same set.
    let runs = sample(&metrics, "sensor_bpf_program_runs_total{program=\"xdp\"}");
    assert!(
        runs.is_some_and(|r| r >= f64::from(pings)),
        "XDP run count {runs:?} with BPF stats on\n{metrics}"
    );

    sh(&["kill", "-TERM", &pid.to_string()]);
    let mut child = running.0.take().expect("child");
    let mut status = None;
    wait_for(
        "the sensor to exit after SIGTERM",
        Duration::from_secs(5),
        || {
            status = child.try_wait().expect("wait");
            status.is_some()
        },
    );
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit status\n{err}");
    let records = std::fs::read_to_string(&flows).expect("flow records written by the sensor user");
    assert!(
        records.lines().any(|l| l.contains(&pair.peer_v4)),
        "no flow record of the pings in {}:\n{records}",
        flows.display()
    );
    let xdp = String::from_utf8_lossy(&sh(&["ip", "link", "show", "dev", &pair.host]).stdout)
        .into_owned();
    assert!(!xdp.contains("xdp"), "XDP still attached after exit: {xdp}");
}

#[test]
fn each_missing_capability_is_named() {
    let caps = unit_caps();
    let pair = VethPair::new();
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = as_unit(&fewer, sensor_bin())
            .args(["run", "--iface", &pair.host])
            .args(["--listen-address", &format!("127.0.0.1:{}", free_port())])
            .output()
            .expect("run sensor");
        let err = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "without CAP_{} the sensor must exit 1:\n{err}",
            missing.to_uppercase()
        );
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            err.contains("missing capabilities") && err.contains(&name),
            "the error does not name {name}:\n{err}"
        );
        let link = String::from_utf8_lossy(&sh(&["ip", "link", "show", "dev", &pair.host]).stdout)
            .into_owned();
        assert!(!link.contains("xdp"), "XDP attached without {name}: {link}");
    }
}

#[test]
fn file_capabilities_as_in_the_image() {
    let caps = unit_caps();
    let docker = std::fs::read_to_string(repo().join("deploy/container/Dockerfile"))
        .expect("read the Dockerfile");
    let setcap = docker
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& setcap "))
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|caps| caps.ends_with("+ep"))
        .expect("a `&& setcap CAPS+ep FILE` line in the Dockerfile")
        .to_string();
    let tmp = TempDir::new("filecaps");
    let bin = tmp.0.join("sensor");
    std::fs::copy(sensor_bin(), &bin).expect("copy the binary");
    sh(&["setcap", &setcap, bin.to_str().expect("utf-8")]);

    // Like a container runtime for a non-root user: the caps only in the
    // bounding set, none permitted or ambient when the binary is exec'd (the
    // shell in between holds none).
    let run = |no_new_privs: bool| -> Output {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={IMAGE_UID}"),
            &format!("--regid={IMAGE_UID}"),
            "--clear-groups",
            "--inh-caps=-all",
            &format!("--bounding-set=-all,{}", plus(&caps)),
        ]);
        if no_new_privs {
            c.arg("--no-new-privs");
        }
        c.args(["/bin/sh", "-c", "exec \"$0\" check --iface lo"])
            .arg(&bin)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv")
    };
    let ok = run(false);
    assert!(
        ok.status.success(),
        "with file capabilities {setcap} the sensor must load: {:?}\n{}",
        ok.status.code(),
        stderr_of(&ok)
    );
    let nnp = run(true);
    assert_eq!(
        nnp.status.code(),
        Some(1),
        "under no_new_privs file capabilities must not apply:\n{}",
        stderr_of(&nnp)
    );
    assert!(
        stderr_of(&nnp).contains("CAP_BPF"),
        "the error must name the capabilities:\n{}",
        stderr_of(&nnp)
    );
}
