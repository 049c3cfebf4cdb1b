//! Who must fetch whose device keys again: /sync's `device_lists` and `/keys/changes`.
//!
//! `changed` holds users sharing a joined room with the requester (or the requester) whose
//! device list changed between two stream positions, and users who started sharing a room with
//! them; `left` holds users who shared a room with them and no longer share any. As in Synapse,
//! every shared room counts, encrypted or not.
//!
//! Changes are rows of `device_list_changes`, positioned in the shared stream, so a change wakes
//! long-polls. Triggers on `devices` write a row for every new, renamed or deleted device,
//! whichever code path did it; the services write rows for new identity keys, cross-signing keys
//! and signatures. A signature made with someone's user-signing key is visible to the signer alone
//! (`visible_to`). An initial sync reports no changes.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, events::room::member::MembershipState};
use rusqlite::Connection;

use crate::{error::Result, storage::e2ee_keys as store};

#[derive(Debug, Default)]
pub struct DeviceLists {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// The changes in `(since, upto]` for `user`.
pub fn between(conn: &Connection, user: &str, since: i64, upto: i64) -> Result<DeviceLists> {
    if since >= upto {
        return Ok(DeviceLists::default());
    }
    let sharing: BTreeSet<String> = store::users_sharing_a_room(conn, user)?
        .into_iter()
        .collect();
    let mut changed: BTreeSet<String> =
        store::device_list_changes_between(conn, user, since, upto)?
            .into_iter()
            .collect();
    let mut left = BTreeSet::new();
    for store::MembershipChange {
        user_id: other,
        membership,
    } in store::membership_changes_around(conn, user, since, upto)?
    {
        match MembershipState::from(membership) {
            MembershipState::Join if sharing.contains(&other) => {
                changed.insert(other);
            }
            MembershipState::Leave | MembershipState::Ban if !sharing.contains(&other) => {
                left.insert(other);
            }
            _ => {}
        }
    }
    let ids = |set: BTreeSet<String>| {
        set.into_iter()
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect()
    };
    Ok(DeviceLists {
        changed: ids(changed.difference(&left).cloned().collect()),
        left: ids(left),
    })
}
