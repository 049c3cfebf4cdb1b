//! Sliding sync connections: what each `(user, device, conn_id)` was already sent, kept in
//! memory only (a restart forgets them all, and clients start over on `M_UNKNOWN_POS`).
//!
//! Every response stores a [`Snapshot`] under a new `pos`; a request names the snapshot it
//! continues from, so a client that retries a request whose response it lost (the same `pos`
//! again) gets the same answer computed afresh. Bounded: [`MAX_POSITIONS`] snapshots per
//! connection (older ones dropped), [`MAX_PER_DEVICE`] connections per device and
//! [`MAX_CONNECTIONS`] in all (the least recently used go). A `pos` that was dropped, or comes
//! from an earlier run, is unknown.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, api::client::sync::sync_events::v5::request::Extensions};

/// Snapshots kept per connection: the newest and a few older ones a retry may still name.
pub const MAX_POSITIONS: usize = 8;
/// Connections kept per device (Element X opens two: "room-list" and "encryption").
pub const MAX_PER_DEVICE: usize = 8;
/// Connections kept in all.
pub const MAX_CONNECTIONS: usize = 2000;

/// Which connection: user, device and the client's `conn_id` (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub user: String,
    pub device: String,
    pub conn_id: String,
}

/// What a connection had been sent as of one `pos`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The stream position the response was computed at (0: nothing sent yet).
    pub stream: i64,
    /// The typing serial at that response.
    pub typing: u64,
    /// Rooms sent so far, even those that since left every list's range.
    pub rooms: HashMap<OwnedRoomId, Arc<SentRoom>>,
    /// Each list's room count, to tell the client when it changes.
    pub list_counts: BTreeMap<String, u64>,
    /// The extensions as last asked for: a request that leaves them out keeps them.
    pub extensions: Extensions,
}

/// What one room was sent up to.
#[derive(Debug, Clone, Default)]
pub struct SentRoom {
    /// Stream position the room's timeline and state were sent up to.
    pub upto: i64,
    /// The membership (and its event) the room was sent with: a new one sends it afresh.
    pub membership_event: String,
    /// The `required_state` the room was sent with; widening it sends the new keys' state.
    pub required_state: Arc<Vec<(String, String)>>,
    /// The `timeline_limit` the room was sent with: a larger one (a client opening the room
    /// after seeing it in a list) sends the newest events again, up to the new limit.
    pub timeline_limit: usize,
    /// Members whose member event was sent under `$LAZY`.
    pub lazy_members: HashSet<String>,
}

struct Connection {
    positions: VecDeque<(u64, Arc<Snapshot>)>,
    last_used: u64,
}

#[derive(Default)]
struct State {
    counter: u64,
    connections: HashMap<ConnectionKey, Connection>,
}

/// Every open sliding sync connection of this process.
pub struct Connections {
    /// Random per process: positions of an earlier run are unknown to this one.
    instance: u32,
    state: Mutex<State>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            instance: rand::random(),
            state: Mutex::default(),
        }
    }
}

impl Connections {
    /// The snapshot a request's `pos` continues from; `None` when unknown (dropped, evicted,
    /// from another connection or an earlier run).
    pub fn get(&self, key: &ConnectionKey, pos: &str) -> Option<Arc<Snapshot>> {
        let (instance, number) = pos.split_once('_')?;
        if instance.parse::<u32>().ok()? != self.instance {
            return None;
        }
        let number: u64 = number.parse().ok()?;
        let mut state = self.lock();
        state.counter += 1;
        let used = state.counter;
        let connection = state.connections.get_mut(key)?;
        connection.last_used = used;
        connection
            .positions
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, snapshot)| snapshot.clone())
    }

    /// A request without `pos` starts the connection over.
    pub fn reset(&self, key: &ConnectionKey) {
        self.lock().connections.remove(key);
    }

    /// Stores the snapshot of a response and returns its `pos`.
    pub fn store(&self, key: &ConnectionKey, snapshot: Snapshot) -> String {
        let mut state = self.lock();
        state.counter += 1;
        let number = state.counter;
        if !state.connections.contains_key(key) {
            evict(&mut state, key);
        }
        let connection = state
            .connections
            .entry(key.clone())
            .or_insert_with(|| Connection {
                positions: VecDeque::new(),
                last_used: number,
            });
        connection.last_used = number;
        connection.positions.push_back((number, Arc::new(snapshot)));
        while connection.positions.len() > MAX_POSITIONS {
            connection.positions.pop_front();
        }
        format!("{}_{number}", self.instance)
    }

    /// How many connections are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().connections.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes room for a new connection `key`: the device's least recently used one beyond
/// [`MAX_PER_DEVICE`], and the least recently used of all beyond [`MAX_CONNECTIONS`].
fn evict(state: &mut State, key: &ConnectionKey) {
    let same_device = |k: &ConnectionKey| k.user == key.user && k.device == key.device;
    let of_device = state.connections.keys().filter(|k| same_device(k)).count();
    if of_device >= MAX_PER_DEVICE {
        let oldest = state
            .connections
            .iter()
            .filter(|(k, _)| same_device(k))
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            state.connections.remove(&oldest);
        }
    }
    if state.connections.len() >= MAX_CONNECTIONS {
        let oldest = state
            .connections
            .iter()
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            state.connections.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str, conn: &str) -> ConnectionKey {
        ConnectionKey {
            user: "@a:x".into(),
            device: device.into(),
            conn_id: conn.into(),
        }
    }

    #[test]
    fn positions_are_per_connection_bounded_and_evicted() {
        let connections = Connections::default();
        let (list, encryption) = (key("D", "room-list"), key("D", "encryption"));
        let first = connections.store(&list, Snapshot::default());
        let other = connections.store(&encryption, Snapshot::default());
        assert!(connections.get(&list, &first).is_some());
        // A position names one connection's snapshot only.
        assert!(connections.get(&list, &other).is_none());
        assert!(connections.get(&encryption, &other).is_some());
        assert!(connections.get(&list, "garbage").is_none());
        assert!(
            connections
                .get(&list, &format!("{}_1", connections.instance ^ 1))
                .is_none()
        );
        // Old positions are dropped.
        for _ in 0..MAX_POSITIONS {
            connections.store(&list, Snapshot::default());
        }
        assert!(connections.get(&list, &first).is_none());
        // Too many connections of one device: the least recently used goes.
        for n in 0..MAX_PER_DEVICE {
            connections.store(&key("D", &n.to_string()), Snapshot::default());
        }
        assert_eq!(connections.len(), MAX_PER_DEVICE);
        assert!(connections.get(&list, &first).is_none());
    }
}
