//! Element's client library (matrix-js-sdk, pinned in tests/js/package.json) for the tests that
//! run Node.js scripts from tests/js: tests/js_client.rs against one server, and
//! tests/federation/js_sdk.rs across servers.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

fn js_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// `<target dir>/test-js` with the SDK installed by `npm ci` (again only when
/// tests/js/package-lock.json changed) and every tests/js script copied beside it: ES modules
/// find packages from their own location, so the scripts run from there. Made once per test
/// binary; async tests call it through `spawn_blocking`.
pub fn sdk_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(prepare).clone()
}

fn prepare() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target dir>/tmp, wherever CARGO_TARGET_DIR points.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-js");
    std::fs::create_dir_all(&dir).expect("test-js dir");
    let lock = std::fs::read(js_sources().join("package-lock.json")).expect("package-lock.json");
    let installed_lock = std::fs::read(dir.join("package-lock.json")).ok();
    if installed_lock.as_deref() != Some(&lock[..]) || !dir.join("node_modules").exists() {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(js_sources().join(file), dir.join(file)).expect("copy package files");
        }
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run npm (is Node.js installed?)");
        assert!(
            output.status.success(),
            "npm ci failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for entry in std::fs::read_dir(js_sources()).expect("tests/js") {
        let path = entry.expect("tests/js entry").path();
        if path.extension().is_some_and(|ext| ext == "mjs") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).expect("copy script");
        }
    }
    dir
}
