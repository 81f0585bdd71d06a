//! Builds the eBPF object with aya-build and places it in OUT_DIR.
//!
//! With `AYA_BUILD_SKIP=1` (pure unit tests, no nightly needed) an empty file
//! stands in for the object; loading it then fails with a clear error.
use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("workspace root")?
        .join("sensor-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(std::env::var("OUT_DIR")?).join("sensor");
        std::fs::write(&out, b"").context("write placeholder object")?;
    }
    aya_build::build_ebpf(
        [Package {
            name: "sensor-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
