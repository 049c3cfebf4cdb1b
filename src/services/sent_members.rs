//! Which room member events each device has been sent by `/sync`, so that lazy-loading syncs
//! with `include_redundant_members: false` leave out the ones the client already holds (Synapse
//! keeps the same per-device cache). It is a memo, not a record: forgetting an entry only makes
//! a member event come again, which the spec allows, so it is bounded and kept in memory. An
//! initial or `full_state` sync starts a device's memo afresh.
//!
//! An entry is a 64-bit hash of (room, member, event ID): eight bytes instead of three strings,
//! and a collision (about one in 2^64) would only leave out one member event.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    sync::Mutex,
};

/// Entries kept for all devices together; past it the memo starts again (a few MiB at most).
const MAX_ENTRIES: usize = 200_000;

/// (user ID, device ID).
type DeviceKey = (String, String);

#[derive(Default)]
pub struct SentMembers {
    hasher: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<DeviceKey, HashSet<u64>>,
    entries: usize,
}

/// What one device holds, taken before a sync is computed.
pub struct DeviceMembers<'a> {
    hasher: &'a RandomState,
    sent: HashSet<u64>,
}

impl DeviceMembers<'_> {
    /// Whether the device was sent this member event of this room.
    pub fn holds(&self, room: &str, member: &str, event_id: &str) -> bool {
        self.sent
            .contains(&self.hasher.hash_one((room, member, event_id)))
    }
}

impl SentMembers {
    /// The client starts again (an initial or full-state sync): it holds nothing of ours.
    pub fn forget_device(&self, user: &str, device: &str) {
        let mut inner = self.lock();
        if let Some(sent) = inner.devices.remove(&(user.to_owned(), device.to_owned())) {
            inner.entries -= sent.len();
        }
    }

    pub fn of_device(&self, user: &str, device: &str) -> DeviceMembers<'_> {
        let sent = self
            .lock()
            .devices
            .get(&(user.to_owned(), device.to_owned()))
            .cloned()
            .unwrap_or_default();
        DeviceMembers {
            hasher: &self.hasher,
            sent,
        }
    }

    /// Notes member events (room, member, event ID) a response carries to the device.
    pub fn record<'a>(
        &self,
        user: &str,
        device: &str,
        sent: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let hashes: Vec<u64> = sent
            .into_iter()
            .map(|member| self.hasher.hash_one(member))
            .collect();
        if hashes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.entries + hashes.len() > MAX_ENTRIES {
            inner.devices.clear();
            inner.entries = 0;
        }
        let device_sent = inner
            .devices
            .entry((user.to_owned(), device.to_owned()))
            .or_default();
        let before = device_sent.len();
        device_sent.extend(hashes);
        let added = device_sent.len() - before;
        inner.entries += added;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_device_until_the_device_starts_again() {
        let memo = SentMembers::default();
        memo.record("@a:x", "PHONE", [("!r:x", "@b:x", "$1")]);
        assert!(memo.of_device("@a:x", "PHONE").holds("!r:x", "@b:x", "$1"));
        assert!(!memo.of_device("@a:x", "PHONE").holds("!r:x", "@b:x", "$2"));
        assert!(!memo.of_device("@a:x", "PHONE").holds("!s:x", "@b:x", "$1"));
        assert!(!memo.of_device("@a:x", "LAPTOP").holds("!r:x", "@b:x", "$1"));
        memo.forget_device("@a:x", "PHONE");
        assert!(!memo.of_device("@a:x", "PHONE").holds("!r:x", "@b:x", "$1"));
        assert_eq!(memo.lock().entries, 0);
    }

    #[test]
    fn stays_bounded() {
        let memo = SentMembers::default();
        let members: Vec<String> = (0..MAX_ENTRIES + 10).map(|i| format!("@u{i}:x")).collect();
        for chunk in members.chunks(1000) {
            memo.record(
                "@a:x",
                "D",
                chunk.iter().map(|m| ("!r:x", m.as_str(), "$e")),
            );
        }
        assert!(memo.lock().entries <= MAX_ENTRIES);
        // Recording the same events again adds nothing.
        let before = memo.lock().entries;
        memo.record(
            "@a:x",
            "D",
            [("!r:x", members.last().unwrap().as_str(), "$e")],
        );
        assert_eq!(memo.lock().entries, before);
    }
}
