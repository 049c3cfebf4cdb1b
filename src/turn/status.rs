//! The relay's state as a small JSON file in the data directory, rewritten atomically every few
//! seconds and at every change, for `appliance turn status`. A file, not an admin endpoint: the
//! CLI already works on the data directory, its permissions already say who may look, and the
//! last known state stays readable after the server stopped.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::public_ip::Source;

pub const STATUS_FILE: &str = "turn-status.json";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub running: bool,
    pub pid: u32,
    /// Unix seconds of the last write.
    pub updated_at: u64,
    pub listeners: Vec<String>,
    pub relay_ports: String,
    pub public_ipv4: Option<String>,
    pub public_ipv6: Option<String>,
    pub source: Option<Source>,
    pub last_check: Option<Check>,
    pub last_change: Option<Change>,
    pub allocations: Vec<Allocation>,
    pub bytes_relayed: u64,
    pub packets_relayed: u64,
    pub packets_dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub at: u64,
    /// The address found, or why none was.
    pub result: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub at: u64,
    pub from: String,
    pub to: String,
    pub ended_allocations: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocation {
    pub user: String,
    pub client: String,
    pub relay: String,
    pub age_secs: u64,
}

pub fn write(data_dir: &Path, status: &Status) {
    let Ok(json) = serde_json::to_vec_pretty(status) else {
        return;
    };
    if let Err(e) = crate::config::write::write_atomically(&path(data_dir), &json, 0o640) {
        tracing::warn!(error = %e, "cannot write the TURN status file");
    }
}

pub fn read(data_dir: &Path) -> std::io::Result<Status> {
    let text = std::fs::read(path(data_dir))?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}
