//! Idempotent toolchain and system bootstrap.
//!
//! Each step checks first and prints what it did or why it skipped:
//! - the nightly toolchain is present (its libLLVM and rust-src are needed);
//! - `rust-src` for nightly (for `-Z build-std=core`), clippy and rustfmt;
//! - `bpf-linker` 0.13.0 built against the nightly's own libLLVM, cached in
//!   cargo's install root so later runs skip the ~50 s build;
//! - the Debian packages the tests and the demo need ([`PACKAGES`]).

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::util;

/// The bpf-linker release this project is tested with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// LLVM majors that bpf-linker 0.13.0 has a cargo feature for.
const LINKER_LLVM_MAJORS: [u32; 3] = [21, 22, 23];

/// Debian packages the tests and the demo need, with what needs them.
pub const PACKAGES: [(&str, &str); 15] = [
    ("tshark", "live tests compare counts with a capture"),
    ("tcpdump", "captures and the libpcap baseline"),
    ("hping3", "TCP SYN, UDP and ICMP test traffic"),
    ("nmap", "scan traffic"),
    ("iperf3", "bulk TCP traffic (tests and demo)"),
    ("iputils-ping", "ICMP echo traffic (tests and demo)"),
    ("prometheus", "promtool and end-to-end scrapes"),
    ("bpftool", "inspecting programs and maps"),
    ("ethtool", "interface offload settings"),
    ("iproute2", "ip and tc: namespaces, veths, qdiscs"),
    ("libcap2-bin", "capsh: capability tests"),
    ("python3", "test helpers"),
    ("curl", "scraping the exporter"),
    ("tcpreplay", "VLAN-tagged frames in the live tests"),
    ("openssl", "certificates for the TLS endpoint tests"),
];

/// Answers to debconf questions that would otherwise block an install.
const DEBCONF_PRESEED: &str = "\
wireshark-common wireshark-common/install-setuid boolean false
iperf3 iperf3/start_daemon boolean false
";

/// What to do about bpf-linker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linker {
    /// Keep a working bpf-linker; build one only if missing or wrong.
    Ensure,
    /// Rebuild it even if a working one is present.
    Rebuild,
}

/// The nightly toolchain's facts the bootstrap relies on.
#[derive(Clone, Debug)]
pub struct Nightly {
    /// `rustc +nightly --print sysroot`.
    pub sysroot: PathBuf,
    /// The sysroot's `lib` directory, which holds libLLVM.
    pub lib_dir: PathBuf,
    /// File name of the nightly's shared libLLVM (`libLLVM.so.22.1-rust-…-nightly`).
    pub llvm_file: String,
    /// Its LLVM major version.
    pub llvm_major: u32,
}

/// Ensures the Rust side: nightly, rust-src, clippy/rustfmt and bpf-linker.
/// Afterwards the bpf-linker directory is first on this process's `PATH`.
pub fn rust(linker: Linker) -> Result<()> {
    if util::which("rustup").is_none() {
        bail!("rustup not found on PATH: install it from https://rustup.rs, then run `rustup toolchain install stable nightly`");
    }
    let nightly = nightly()?;
    println!(
        "bootstrap: nightly toolchain at {} (LLVM {})",
        nightly.sysroot.display(),
        nightly.llvm_major
    );
    component(Some("nightly"), "rust-src")?;
    component(Some("nightly"), "clippy")?;
    component(None, "clippy")?;
    component(None, "rustfmt")?;
    bpf_linker(&nightly, linker)
}

/// Finds the nightly toolchain and its libLLVM.
pub fn nightly() -> Result<Nightly> {
    let out = util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    if !out.status.success() {
        bail!(
            "nightly toolchain not installed: run `rustup toolchain install nightly` ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib_dir = sysroot.join("lib");
    let names: Vec<String> = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (llvm_file, llvm_major) = names
        .iter()
        .find_map(|n| llvm_major_of(n).map(|m| (n.clone(), m)))
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-*-nightly in {}: reinstall with `rustup toolchain uninstall nightly && rustup toolchain install nightly`",
                lib_dir.display()
            )
        })?;
    Ok(Nightly {
        sysroot,
        lib_dir,
        llvm_file,
        llvm_major,
    })
}

/// The LLVM major of a file named like `libLLVM.so.22.1-rust-1.97.0-nightly`.
pub fn llvm_major_of(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("libLLVM.so.")?;
    if !rest.contains("-rust-") || !rest.ends_with("-nightly") {
        return None;
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Adds a rustup component unless installed (`toolchain` None: the active one).
fn component(toolchain: Option<&str>, name: &str) -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(t) = toolchain {
        list.args(["--toolchain", t]);
    }
    list.current_dir(util::repo_root());
    let installed = util::stdout_of(&mut list)?;
    let label = toolchain.unwrap_or("the default toolchain");
    if installed
        .lines()
        .any(|l| l == name || l.starts_with(&format!("{name}-")))
    {
        println!("bootstrap: {name} for {label}: present (skipped)");
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add", name]);
    if let Some(t) = toolchain {
        add.args(["--toolchain", t]);
    }
    add.current_dir(util::repo_root());
    util::run(&mut add).with_context(|| {
        format!("could not add {name} to {label}: check network access to static.rust-lang.org")
    })?;
    println!("bootstrap: {name} for {label}: installed");
    Ok(())
}

/// cargo's install root: `CARGO_INSTALL_ROOT`, else `CARGO_HOME`, else `~/.cargo`.
pub fn install_root() -> Result<PathBuf> {
    for var in ["CARGO_INSTALL_ROOT", "CARGO_HOME"] {
        if let Some(v) = env::var_os(var).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(v));
        }
    }
    let home =
        env::var_os("HOME").context("neither CARGO_INSTALL_ROOT, CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// Why an installed bpf-linker cannot be used, if it cannot.
fn linker_problem(path: &Path, nightly: &Nightly) -> Option<String> {
    let out = match util::output(Command::new(path).arg("--version")) {
        Ok(out) => out,
        Err(e) => return Some(format!("{e:#}")),
    };
    if !out.status.success() {
        return Some(format!(
            "`{} --version` failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let version = String::from_utf8_lossy(&out.stdout);
    if !version_matches(&version) {
        return Some(format!(
            "it reports `{}`, want {BPF_LINKER_VERSION}",
            version.trim()
        ));
    }
    // ldd is part of libc-bin; where it is missing the version check must do.
    let ldd = util::output(Command::new("ldd").arg(path)).ok()?;
    linkage_problem(&String::from_utf8_lossy(&ldd.stdout), &nightly.lib_dir)
}

/// Whether `bpf-linker --version` output names the wanted release.
pub fn version_matches(output: &str) -> bool {
    output
        .split_whitespace()
        .any(|w| w.trim_start_matches('v') == BPF_LINKER_VERSION)
}

/// Checks `ldd` output: libLLVM must resolve into the nightly's `lib_dir`.
pub fn linkage_problem(ldd: &str, lib_dir: &Path) -> Option<String> {
    let want = lib_dir
        .canonicalize()
        .unwrap_or_else(|_| lib_dir.to_path_buf());
    let Some(line) = ldd
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("libLLVM"))
    else {
        return Some("it is not linked against a shared libLLVM".to_string());
    };
    let resolved = line
        .split("=>")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("not");
    if resolved == "not" {
        return Some(format!(
            "its libLLVM is not found (`{line}`): the nightly changed"
        ));
    }
    let dir = Path::new(resolved)
        .parent()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
    if dir.as_deref() == Some(want.as_path()) {
        None
    } else {
        Some(format!(
            "its libLLVM is {resolved}, not the nightly's in {}",
            lib_dir.display()
        ))
    }
}

fn bpf_linker(nightly: &Nightly, mode: Linker) -> Result<()> {
    let bin_dir = install_root()?.join("bin");
    let cached = bin_dir.join("bpf-linker");
    // The copy in the install root wins: it is what we build and cache, and
    // putting its directory first on PATH makes rustc use it.
    let candidate = if util::is_executable(&cached) {
        Some(cached.clone())
    } else {
        util::which("bpf-linker")
    };
    if mode == Linker::Ensure {
        if let Some(path) = &candidate {
            match linker_problem(path, nightly) {
                None => {
                    if let Some(dir) = path.parent() {
                        util::prepend_path(dir)?;
                    }
                    println!(
                        "bootstrap: bpf-linker {BPF_LINKER_VERSION} at {} linked against the nightly's libLLVM: present (skipped)",
                        path.display()
                    );
                    return Ok(());
                }
                Some(why) => println!(
                    "bootstrap: bpf-linker at {} is not usable ({why}): rebuilding",
                    path.display()
                ),
            }
        } else {
            println!("bootstrap: bpf-linker not found: building it (about a minute)");
        }
    } else {
        println!("bootstrap: rebuilding bpf-linker as asked");
    }
    install_linker(nightly, &bin_dir)?;
    util::prepend_path(&bin_dir)?;
    if let Some(why) = linker_problem(&cached, nightly) {
        bail!(
            "bpf-linker was built into {} but is not usable: {why}",
            bin_dir.display()
        );
    }
    println!(
        "bootstrap: bpf-linker {BPF_LINKER_VERSION}: installed to {}",
        cached.display()
    );
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cargo install`s bpf-linker against the nightly's libLLVM: a temporary
/// `LLVM_PREFIX` whose `lib/libLLVM.so` points at the nightly's library, and
/// an rpath so the binary finds it at run time.
fn install_linker(nightly: &Nightly, bin_dir: &Path) -> Result<()> {
    if !LINKER_LLVM_MAJORS.contains(&nightly.llvm_major) {
        bail!(
            "the nightly uses LLVM {}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM {:?}: install a matching nightly (e.g. `rustup toolchain install nightly-2026-05-19`) or update BPF_LINKER_VERSION in xtask/src/bootstrap.rs",
            nightly.llvm_major,
            LINKER_LLVM_MAJORS
        );
    }
    let prefix = TempDir(env::temp_dir().join(format!("xtask-llvm-prefix-{}", std::process::id())));
    let lib = prefix.0.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let link = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(nightly.lib_dir.join(&nightly.llvm_file), &link)
        .with_context(|| format!("cannot create symlink {}", link.display()))?;
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "--locked",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        &format!("llvm-{}", nightly.llvm_major),
        "--force",
        "--root",
    ])
    .arg(bin_dir.parent().unwrap_or(bin_dir))
    .env("LLVM_PREFIX", &prefix.0)
    .env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", nightly.lib_dir.display()),
    )
    // A shared target dir (or the repository's config) must not leak in.
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET")
    .current_dir(&prefix.0)
    .stdin(Stdio::null());
    util::run(&mut cmd).context(
        "building bpf-linker failed: it needs a C++ standard library (libstdc++) and network access to crates.io",
    )
}

/// Whether a `dpkg-query -W -f='${Status}'` result means installed.
pub fn status_installed(status: &str) -> bool {
    status.trim() == "install ok installed"
}

/// The packages of [`PACKAGES`] that dpkg does not report as installed.
pub fn missing_packages() -> Result<Vec<&'static str>> {
    if util::which("dpkg-query").is_none() {
        let names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
        bail!(
            "dpkg-query not found: this bootstrap knows Debian only; install the equivalents of: {}",
            names.join(" ")
        );
    }
    let mut missing = Vec::new();
    for (name, _) in PACKAGES {
        let out = util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))?;
        if !out.status.success() || !status_installed(&String::from_utf8_lossy(&out.stdout)) {
            missing.push(name);
        }
    }
    Ok(missing)
}

/// Installs whichever of [`PACKAGES`] are missing (apt-get update once first).
pub fn packages() -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!(
            "bootstrap: Debian packages: all {} present (skipped)",
            PACKAGES.len()
        );
        return Ok(());
    }
    println!("bootstrap: Debian packages missing: {}", missing.join(" "));
    let sudo = if util::is_root() {
        None
    } else if let Some(sudo) = util::which("sudo") {
        Some(sudo)
    } else {
        bail!(
            "not root: apt-get needs root; run as root or install: apt-get install {}",
            missing.join(" ")
        );
    };
    let command = |program: &str| {
        let mut cmd = match &sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    preseed(command("debconf-set-selections"))?;
    util::run(command("apt-get").args(["update", "-q"]))
        .context("apt-get update failed: check network access to the Debian mirrors")?;
    let mut install = command("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing);
    util::run(&mut install).context("apt-get install failed")?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    println!(
        "bootstrap: Debian packages installed: {}",
        missing.join(" ")
    );
    Ok(())
}

fn preseed(mut cmd: Command) -> Result<()> {
    use std::io::Write as _;
    let shown = util::display(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}` (package debconf)"))?;
    child
        .stdin
        .take()
        .context("no stdin for debconf-set-selections")?
        .write_all(DEBCONF_PRESEED.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_is_read_from_the_versioned_library_name() {
        assert_eq!(
            llvm_major_of("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(
            llvm_major_of("libLLVM.so.21.1-rust-1.93.0-nightly"),
            Some(21)
        );
        assert_eq!(llvm_major_of("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major_of("libLLVM.so.22.1-rust-1.95.0-stable"), None);
        assert_eq!(llvm_major_of("librustc_driver-b5a965480ee51f9a.so"), None);
    }

    #[test]
    fn linker_version_must_match_exactly() {
        assert!(version_matches("bpf-linker 0.13.0\n"));
        assert!(!version_matches("bpf-linker 0.12.0\n"));
        assert!(!version_matches("bpf-linker 0.13.01\n"));
        assert!(!version_matches(""));
    }

    #[test]
    fn linkage_is_accepted_only_into_the_nightly_lib_dir() {
        let lib = Path::new("/opt/rust/nightly/lib");
        let good = "\tlinux-vdso.so.1 (0x1)\n\tlibLLVM.so.22.1-rust-1.97.0-nightly => /opt/rust/nightly/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x2)\n";
        assert_eq!(linkage_problem(good, lib), None);
        let elsewhere = "\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x2)\n";
        assert!(linkage_problem(elsewhere, lib)
            .unwrap()
            .contains("/usr/lib/llvm-22"));
        let gone = "\tlibLLVM.so.22.1-rust-1.97.0-nightly => not found\n";
        assert!(linkage_problem(gone, lib).unwrap().contains("not found"));
        let static_llvm = "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x3)\n";
        assert!(linkage_problem(static_llvm, lib)
            .unwrap()
            .contains("not linked"));
    }

    #[test]
    fn dpkg_status_means_installed_only_when_fully_installed() {
        assert!(status_installed("install ok installed"));
        assert!(!status_installed("deinstall ok config-files"));
        assert!(!status_installed("install ok unpacked"));
        assert!(!status_installed(""));
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len());
    }

    #[test]
    fn this_machine_has_a_usable_nightly() {
        // The project's toolchain contract: nightly with a shared libLLVM.
        let n = nightly().unwrap();
        assert!(n.lib_dir.join(&n.llvm_file).exists());
        assert!(LINKER_LLVM_MAJORS.contains(&n.llvm_major));
    }
}
