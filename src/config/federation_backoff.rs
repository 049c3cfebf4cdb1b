//! Synapse's `federation` section: how long one request to another server may take
//! (`services/federation/client.rs`) and how the outbound sender backs off from a server that
//! does not answer (`services/federation/sender/`).

use serde::{Deserialize, Serialize};

use super::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// The longest one request to another server may take, connecting included (Synapse: 60s).
    pub client_timeout: Duration,
    /// The wait before the first retry of a server that failed (Synapse: 10m).
    pub destination_min_retry_interval: Duration,
    /// Each further failure multiplies the wait by this (and a random 0.8 to 1.4; Synapse: 2).
    pub destination_retry_multiplier: f64,
    /// The longest wait between retries (Synapse: 7d).
    pub destination_max_retry_interval: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(60),
            destination_min_retry_interval: Duration::from_secs(10 * 60),
            destination_retry_multiplier: 2.0,
            destination_max_retry_interval: Duration::from_secs(7 * 86_400),
        }
    }
}
