//! The status file: what the renewal task last did, for `appliance cert status` and `cert renew`
//! (another process), written atomically after every attempt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// When the last issuance attempt ended (Unix seconds), and its error if it failed.
    pub last_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    /// When the running server plans the next attempt.
    pub next_attempt_at: Option<i64>,
    /// The `requested_at` of the last `cert renew` request the server has handled, and of the
    /// one that caused the last attempt (none when the schedule did).
    pub handled_request_at: Option<i64>,
    pub last_attempt_request_at: Option<i64>,
    /// The CA's suggested renewal window for the current certificate (ACME Renewal
    /// Information, RFC 9773), Unix seconds; none when the CA offers none.
    #[serde(default)]
    pub renewal_window: Option<(i64, i64)>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    super::directory(data_dir).join("status.json")
}

pub fn read(data_dir: &Path) -> Status {
    std::fs::read(path(data_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub fn write(data_dir: &Path, status: &Status) {
    let bytes = serde_json::to_vec_pretty(status).unwrap_or_default();
    if let Err(e) = crate::config::write::write_atomically(&path(data_dir), &bytes, 0o644) {
        tracing::warn!(error = %e, "cannot write the certificate status file");
    }
}

/// A `cert renew` request, left in the data directory for the running server to pick up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub requested_at: i64,
    pub force: bool,
}

pub fn request_path(data_dir: &Path) -> PathBuf {
    super::directory(data_dir).join("renew-request.json")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
