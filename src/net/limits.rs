//! Admission of connections: a cap per client address and one overall, and a reserve of file
//! descriptors, so that a crowd of slow or idle connections from one place cannot lock everyone
//! else out or leave the server without descriptors for its database and media files.
//!
//! Connections are admitted at accept: `client_max_connections`,
//! `client_max_connections_per_address`, and a reserve of [`FD_RESERVE`] (128) file descriptors;
//! the soft `RLIMIT_NOFILE` is raised to the hard limit at start.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// New connections are closed at accept while fewer descriptors than this are left under
/// `RLIMIT_NOFILE`: SQLite (database, WAL, shared memory per connection), media files being
/// sent or received and the TURN relay's sockets need them.
pub const FD_RESERVE: u64 = 128;
/// Descriptors assumed in use besides connections; below `connections + this + FD_RESERVE`
/// the real count is not read (it costs a directory listing).
const FD_BASELINE: u64 = 256;
/// At most one summary line of refused connections per this interval.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd and most shells start services
/// with a soft limit of 1024), and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, "cannot raise the file descriptor limit");
    }
    fd_limit()
}

/// The soft `RLIMIT_NOFILE` (read each time: an operator may change it with `prlimit`).
fn fd_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// Descriptors open in this process.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `client_max_connections_per_address` connections from this address are open.
    PerAddress,
    /// `client_max_connections` connections are open.
    Total,
    /// Fewer than [`FD_RESERVE`] file descriptors are left.
    FileDescriptors,
}

/// The caps, shared by every listener of the process.
pub struct ConnectionLimits {
    total_cap: usize,
    per_address_cap: usize,
    open: Mutex<Open>,
    refused: [AtomicU64; 3],
    last_summary: Mutex<(Instant, u64)>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The key a client address is counted under: IPv6 clients by their /64, the smallest block a
/// home or a phone gets, so that one subscriber cannot take a fresh address per connection.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl ConnectionLimits {
    /// The process's caps from `client_max_connections` and `client_max_connections_per_address`,
    /// with the descriptor limit raised first (see [`raise_fd_limit`]). One set serves every
    /// listener: descriptors are the process's.
    pub fn from_config(config: &crate::config::Config) -> Arc<Self> {
        let fd_limit = raise_fd_limit();
        tracing::info!(fd_limit, "file descriptor limit");
        Self::new(
            config.client_max_connections as usize,
            config.client_max_connections_per_address as usize,
        )
    }

    pub fn new(total_cap: usize, per_address_cap: usize) -> Arc<Self> {
        Arc::new(Self {
            total_cap,
            per_address_cap,
            open: Mutex::default(),
            refused: Default::default(),
            last_summary: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Counts a new connection from `peer` in, or says why it must be closed. `exempt` peers
    /// (the listener's trusted reverse proxies, which carry many clients) skip the per-address
    /// cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, exempt: bool) -> Result<Slot, Refusal> {
        let result = self.try_admit(peer, exempt);
        if let Err(refusal) = result {
            self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, ?refusal, "connection closed at accept");
            self.summarize();
        }
        result
    }

    fn try_admit(self: &Arc<Self>, peer: IpAddr, exempt: bool) -> Result<Slot, Refusal> {
        let key = address_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.total_cap {
            return Err(Refusal::Total);
        }
        let from_peer = open.per_address.get(&key).copied().unwrap_or(0);
        if !exempt && from_peer >= self.per_address_cap {
            return Err(Refusal::PerAddress);
        }
        let limit = fd_limit();
        let near_limit = open.total as u64 + FD_BASELINE + FD_RESERVE >= limit;
        if near_limit && open_fds() + FD_RESERVE >= limit {
            return Err(Refusal::FileDescriptors);
        }
        open.total += 1;
        *open.per_address.entry(key).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            key,
        })
    }

    /// Connections refused so far: per address, overall, for lack of file descriptors.
    pub fn refused(&self) -> [u64; 3] {
        self.refused.each_ref().map(|n| n.load(Ordering::Relaxed))
    }

    /// A warning now and then, so an operator sees that clients are being turned away.
    fn summarize(&self) {
        let refused = self.refused();
        let total: u64 = refused.iter().sum();
        let mut last = self.last_summary.lock().unwrap_or_else(|p| p.into_inner());
        if last.0.elapsed() < SUMMARY_EVERY && last.1 != 0 {
            return;
        }
        let [per_address, overall, fds] = refused;
        tracing::warn!(
            since_last = total - last.1,
            per_address,
            overall,
            file_descriptors = fds,
            "connections closed at accept: over client_max_connections_per_address, \
             client_max_connections, or the file descriptor reserve"
        );
        *last = (Instant::now(), total);
    }
}

/// An admitted connection; dropping it counts it out.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_overall() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        let first = limits.admit(a, false).unwrap();
        let _second = limits.admit(a, false).unwrap();
        assert_eq!(limits.admit(a, false).err(), Some(Refusal::PerAddress));
        // A trusted proxy carries many clients.
        let third = limits.admit(a, true).unwrap();
        assert_eq!(limits.admit(b, false).err(), Some(Refusal::Total));
        drop(first);
        drop(third);
        let _b = limits.admit(b, false).unwrap();
        assert_eq!(limits.refused(), [1, 1, 0]);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let limits = ConnectionLimits::new(100, 1);
        let _one = limits.admit("2001:db8::1".parse().unwrap(), false).unwrap();
        assert!(limits.admit("2001:db8::2".parse().unwrap(), false).is_err());
        assert!(
            limits
                .admit("2001:db8:0:1::1".parse().unwrap(), false)
                .is_ok()
        );
    }
}
