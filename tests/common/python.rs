//! Python virtualenvs for the tests that run third-party Python programs (matrix-nio clients,
//! Synapse). tests/venv.py makes or reuses them; tests/run.sh makes them before `cargo test` and
//! names their interpreters in environment variables, and without it the test makes them itself,
//! so a plain `cargo test` works on a machine with python3 and PyPI access.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// One venv: where tests/run.sh says it is, and how to make it otherwise.
pub struct Venv {
    /// The variable tests/run.sh (and CI) sets to the venv's interpreter.
    pub env_var: &'static str,
    /// The directory under the target dir, e.g. `test-venv`.
    pub dir_name: &'static str,
    /// The requirements file, relative to the crate root.
    pub requirements: &'static str,
    /// A module the finished venv must import.
    pub module: &'static str,
}

impl Venv {
    /// The venv's interpreter: `env_var` when set, else made or reused by tests/venv.py (which
    /// blocks: call it from `spawn_blocking` in async tests, once per test binary).
    pub fn python(&self) -> Result<PathBuf, String> {
        if let Some(python) = std::env::var_os(self.env_var) {
            return Ok(PathBuf::from(python));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // CARGO_TARGET_TMPDIR is <target dir>/tmp, wherever CARGO_TARGET_DIR points.
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir");
        let output = Command::new("python3")
            .arg(root.join("tests/venv.py"))
            .arg(target_dir.join(self.dir_name))
            .arg(root.join(self.requirements))
            .arg(self.module)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3 (is it installed?): {e}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "tests/venv.py for {} failed ({}):\n{stderr}",
                self.requirements, output.status
            ));
        }
        eprint!("{stderr}");
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        ))
    }
}
