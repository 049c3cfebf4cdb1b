//! Typing notifications: ephemeral, kept in memory with their timeouts, each change bumping a
//! serial that sync tokens carry.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

/// Longest typing timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Typing {
    state: Mutex<TypingState>,
}

struct TypingState {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

impl Default for TypingState {
    /// Typing is not persisted, but sync tokens from before a restart live on in clients: the
    /// serial starts at the boot time in microseconds, past any serial an earlier run reached
    /// (which would otherwise hide this run's first changes from those tokens).
    fn default() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            serial: boot,
            rooms: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct RoomTyping {
    /// The serial of the last change in this room.
    changed: u64,
    users: HashMap<OwnedUserId, Instant>,
}

impl Typing {
    /// Sets or clears a user's typing state; returns the new serial if anything changed.
    pub fn set(&self, room_id: &RoomId, user: &UserId, typing: Option<Duration>) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire();
        let serial = state.serial + 1;
        let room = state.rooms.entry(room_id.to_owned()).or_default();
        let changed = match typing {
            Some(timeout) => room
                .users
                .insert(user.to_owned(), Instant::now() + timeout.min(MAX_TIMEOUT))
                .is_none(),
            None => room.users.remove(user).is_some(),
        };
        if changed {
            room.changed = serial;
            state.serial = serial;
            Some(serial)
        } else {
            None
        }
    }

    pub fn serial(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire();
        state.serial
    }

    /// Every room whose typing users changed after `since`, with who types there now (the
    /// application-service sender pushes these).
    pub fn rooms_changed_since(&self, since: u64) -> Vec<(OwnedRoomId, Vec<OwnedUserId>)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire();
        let since = if since > state.serial { 0 } else { since };
        state
            .rooms
            .iter()
            .filter(|(_, room)| room.changed > since)
            .map(|(id, room)| (id.clone(), room.users.keys().cloned().collect()))
            .collect()
    }

    /// Users typing in the room, if that changed after `since`.
    pub fn changed_since(&self, room_id: &RoomId, since: u64) -> Option<Vec<OwnedUserId>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire();
        // A serial from the future comes from an earlier run (the clock went back): all is new.
        let since = if since > state.serial { 0 } else { since };
        let room = state.rooms.get(room_id)?;
        (room.changed > since).then(|| room.users.keys().cloned().collect())
    }
}

impl TypingState {
    fn expire(&mut self) {
        let now = Instant::now();
        let mut serial = self.serial;
        for room in self.rooms.values_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                serial += 1;
                room.changed = serial;
            }
        }
        self.serial = serial;
    }
}
