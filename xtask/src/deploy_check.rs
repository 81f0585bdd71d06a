//! `cargo xtask deploy`: the offline checks of `deploy/` (`deploy/check.sh`:
//! systemd-analyze verify and security on the unit, hadolint on the
//! Dockerfile, kubernetes-validate on the manifests, cross-file consistency).
//!
//! No root is needed. The unit's `ExecStart=` binary must exist for
//! `systemd-analyze verify`, so the script gets the debug build of the sensor
//! when there is one (else it uses a stand-in). The proof that the sensor runs
//! with exactly the unit's capabilities is the root test
//! `sensor/tests/deploy.rs`, which also runs this script.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Result};

use crate::util;

/// The script, relative to the repository root.
pub const CHECK_SCRIPT: &str = "deploy/check.sh";

/// The command that runs the checks, with `sensor` as the unit's binary if
/// given.
pub fn command(root: &Path, sensor: Option<&Path>) -> Command {
    let mut cmd = Command::new(root.join(CHECK_SCRIPT));
    if let Some(bin) = sensor {
        cmd.arg("--sensor").arg(bin);
    }
    cmd.current_dir(root);
    cmd
}

/// The debug build of the sensor, if it exists.
fn built_sensor() -> Option<PathBuf> {
    let bin = util::target_dir().join("debug").join("sensor");
    util::is_executable(&bin).then_some(bin)
}

/// Runs `deploy/check.sh`; fails if any check fails.
pub fn deploy_check() -> Result<()> {
    let root = util::repo_root();
    let script = root.join(CHECK_SCRIPT);
    if !util::is_executable(&script) {
        bail!(
            "{} is missing or not executable: restore it from git (`git checkout -- {CHECK_SCRIPT}`)",
            script.display()
        );
    }
    let sensor = built_sensor();
    if sensor.is_none() {
        println!("deploy: no target/debug/sensor; `cargo build -p sensor` first to verify the unit against the real binary");
    }
    util::run(&mut command(&root, sensor.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_exists_and_is_executable() {
        assert!(util::is_executable(&util::repo_root().join(CHECK_SCRIPT)));
    }

    #[test]
    fn the_sensor_is_passed_when_given() {
        let root = Path::new("/r");
        let with = command(root, Some(Path::new("/b/sensor")));
        let args: Vec<_> = with.get_args().collect();
        assert_eq!(args, ["--sensor", "/b/sensor"]);
        assert_eq!(with.get_program(), "/r/deploy/check.sh");
        assert_eq!(command(root, None).get_args().count(), 0);
    }
}
