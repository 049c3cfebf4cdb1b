//! Tables `remote_device_lists`, `remote_devices`, `federation_to_device_seen` and
//! `device_list_outbound_position` (migration `0015_remote_e2ee.sql`), and the reads of
//! `device_list_changes` that turn our users' changes into EDUs. No Matrix rules here:
//! `services/e2ee/federation.rs` decides.

use rusqlite::{Connection, OptionalExtension, params};

/// A cached device list of another server's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteList {
    pub stream_id: i64,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
}

/// A device of a cached list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: Option<String>,
}

pub fn remote_list(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<RemoteList>> {
    conn.prepare_cached(
        "SELECT stream_id, master_key, self_signing_key FROM remote_device_lists
         WHERE user_id = ?1",
    )?
    .query_row([user_id], |row| {
        Ok(RemoteList {
            stream_id: row.get(0)?,
            master_key: row.get(1)?,
            self_signing_key: row.get(2)?,
        })
    })
    .optional()
}

pub fn remote_devices(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<RemoteDevice>> {
    conn.prepare_cached(
        "SELECT device_id, display_name, key_json FROM remote_devices WHERE user_id = ?1
         ORDER BY device_id",
    )?
    .query_map([user_id], |row| {
        Ok(RemoteDevice {
            device_id: row.get(0)?,
            display_name: row.get(1)?,
            key_json: row.get(2)?,
        })
    })?
    .collect()
}

/// Replaces the whole cached list of `user_id` (a resync).
pub fn replace_remote_list(
    conn: &Connection,
    user_id: &str,
    list: &RemoteList,
    devices: &[RemoteDevice],
) -> rusqlite::Result<()> {
    delete_remote_list(conn, user_id)?;
    conn.prepare_cached(
        "INSERT INTO remote_device_lists (user_id, stream_id, master_key, self_signing_key)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        user_id,
        list.stream_id,
        list.master_key,
        list.self_signing_key
    ])?;
    for device in devices {
        put_remote_device(conn, user_id, device)?;
    }
    Ok(())
}

fn put_remote_device(
    conn: &Connection,
    user_id: &str,
    device: &RemoteDevice,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO remote_devices (user_id, device_id, display_name, key_json)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             display_name = excluded.display_name, key_json = excluded.key_json",
    )?
    .execute(params![
        user_id,
        device.device_id,
        device.display_name,
        device.key_json
    ])?;
    Ok(())
}

/// Applies one device update to a cached list and moves its `stream_id` on: the device is
/// stored (or, `None`, deleted).
pub fn apply_device_update(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    device: Option<&RemoteDevice>,
    stream_id: i64,
) -> rusqlite::Result<()> {
    match device {
        Some(device) => put_remote_device(conn, user_id, device)?,
        None => {
            conn.prepare_cached(
                "DELETE FROM remote_devices WHERE user_id = ?1 AND device_id = ?2",
            )?
            .execute([user_id, device_id])?;
        }
    }
    conn.prepare_cached("UPDATE remote_device_lists SET stream_id = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, stream_id])?;
    Ok(())
}

/// Sets the cross-signing keys of a cached list (`None` keeps the stored one); whether the user
/// has a cached list.
pub fn set_remote_cross_signing(
    conn: &Connection,
    user_id: &str,
    master_key: Option<&str>,
    self_signing_key: Option<&str>,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE remote_device_lists SET master_key = coalesce(?2, master_key),
                 self_signing_key = coalesce(?3, self_signing_key)
             WHERE user_id = ?1",
        )?
        .execute(params![user_id, master_key, self_signing_key])?
        > 0)
}

/// Forgets the cached list of `user_id` (and its devices).
pub fn delete_remote_list(conn: &Connection, user_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM remote_device_lists WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Records the `m.direct_to_device` message `message_id` of `origin`; `false` when it was
/// received before.
pub fn mark_to_device_seen(
    conn: &Connection,
    origin: &str,
    message_id: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO federation_to_device_seen (origin, message_id, received_ts)
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![origin, message_id, now])?
        == 1)
}

/// Forgets the message IDs received before `before`.
pub fn prune_to_device_seen(conn: &Connection, before: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM federation_to_device_seen WHERE received_ts < ?1")?
        .execute([before])
}

// ---- our users' changes, as EDUs ----

/// How far our users' device-list changes were queued for other servers.
pub fn outbound_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT position FROM device_list_outbound_position WHERE id = 1")?
        .query_row([], |row| row.get(0))
}

pub fn set_outbound_position(conn: &Connection, position: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE device_list_outbound_position SET position = ?1 WHERE id = 1")?
        .execute([position])?;
    Ok(())
}

/// The newest device-list change (of anyone).
pub fn last_change_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(stream_position), 0) FROM device_list_changes")?
        .query_row([], |row| row.get(0))
}

/// A change of one of our users that everyone sharing a room with them may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChange {
    pub stream_position: i64,
    pub user_id: String,
    /// `None`: the user's cross-signing keys.
    pub device_id: Option<String>,
    pub deleted: bool,
}

/// Our users' public changes after `after`, oldest first, at most `limit`.
pub fn local_changes_after(
    conn: &Connection,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<LocalChange>> {
    conn.prepare_cached(
        "SELECT c.stream_position, c.user_id, c.device_id, c.deleted FROM device_list_changes c
         WHERE c.stream_position > ?1 AND c.visible_to IS NULL
           AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = c.user_id)
         ORDER BY c.stream_position LIMIT ?2",
    )?
    .query_map(params![after, limit], |row| {
        Ok(LocalChange {
            stream_position: row.get(0)?,
            user_id: row.get(1)?,
            device_id: row.get(2)?,
            deleted: row.get(3)?,
        })
    })?
    .collect()
}

/// The position of the user's last public device change (not of cross-signing keys) before
/// `before`: a device-list update's `prev_id`, and `/user/devices`'s `stream_id`.
pub fn last_device_change_before(
    conn: &Connection,
    user_id: &str,
    before: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT max(stream_position) FROM device_list_changes
         WHERE user_id = ?1 AND stream_position < ?2 AND device_id IS NOT NULL
           AND visible_to IS NULL",
    )?
    .query_row(params![user_id, before], |row| row.get(0))
}

/// The display name of one of our devices, `None` when it does not exist.
pub fn local_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<Option<String>>> {
    conn.prepare_cached("SELECT display_name FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .query_row([user_id, device_id], |row| row.get(0))
        .optional()
}

/// A device of one of our users, as other servers are told of it.
pub struct LocalDevice {
    pub device_id: String,
    pub display_name: Option<String>,
}

/// Every device of one of our users.
pub fn local_devices(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<LocalDevice>> {
    conn.prepare_cached(
        "SELECT device_id, display_name FROM devices WHERE user_id = ?1 ORDER BY device_id",
    )?
    .query_map([user_id], |row| {
        Ok(LocalDevice {
            device_id: row.get(0)?,
            display_name: row.get(1)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::migrated_test_file;

    fn open() -> (tempfile::TempDir, Connection) {
        let (dir, path) = migrated_test_file();
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        (dir, conn)
    }

    fn local_user(conn: &Connection, user: &str) {
        conn.execute(
            "INSERT INTO users (user_id, localpart, created_ts) VALUES (?1, ?1, 0)",
            [user],
        )
        .unwrap();
    }

    fn membership(conn: &Connection, room: &str, user: &str, membership: &str) {
        conn.execute(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
             VALUES (?1, ?2, ?3, '$e', 1)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership",
            [room, user, membership],
        )
        .unwrap();
    }

    fn cache(conn: &Connection, user: &str) {
        let list = RemoteList {
            stream_id: 3,
            master_key: None,
            self_signing_key: None,
        };
        let device = RemoteDevice {
            device_id: "D".into(),
            display_name: None,
            key_json: Some("{}".into()),
        };
        replace_remote_list(conn, user, &list, &[device]).unwrap();
    }

    #[test]
    fn the_cache_goes_when_the_last_shared_room_ends() {
        let (_dir, conn) = open();
        local_user(&conn, "@alice:here");
        for room in ["!a:here", "!b:here"] {
            membership(&conn, room, "@alice:here", "join");
            membership(&conn, room, "@bob:there", "join");
        }
        cache(&conn, "@bob:there");
        assert!(
            crate::storage::rooms::shares_a_room_with_a_local_user(&conn, "@bob:there").unwrap()
        );
        // Bob leaves one room: another is still shared.
        membership(&conn, "!a:here", "@bob:there", "leave");
        assert!(remote_list(&conn, "@bob:there").unwrap().is_some());
        // Alice leaves the other: nothing shared any more.
        membership(&conn, "!b:here", "@alice:here", "leave");
        assert!(
            !crate::storage::rooms::shares_a_room_with_a_local_user(&conn, "@bob:there").unwrap()
        );
        assert_eq!(remote_list(&conn, "@bob:there").unwrap(), None);
        assert!(remote_devices(&conn, "@bob:there").unwrap().is_empty());
    }

    #[test]
    fn updates_move_the_cached_stream_id() {
        let (_dir, conn) = open();
        cache(&conn, "@bob:there");
        let device = RemoteDevice {
            device_id: "E".into(),
            display_name: Some("phone".into()),
            key_json: None,
        };
        apply_device_update(&conn, "@bob:there", "E", Some(&device), 7).unwrap();
        apply_device_update(&conn, "@bob:there", "D", None, 9).unwrap();
        assert_eq!(
            remote_list(&conn, "@bob:there").unwrap().unwrap().stream_id,
            9
        );
        assert_eq!(remote_devices(&conn, "@bob:there").unwrap(), vec![device]);
    }

    #[test]
    fn our_device_changes_chain_by_user() {
        let (_dir, conn) = open();
        let start = last_change_position(&conn).unwrap();
        local_user(&conn, "@alice:here");
        local_user(&conn, "@carol:here");
        let device = |user: &str, id: &str| {
            conn.execute(
                "INSERT INTO devices (user_id, device_id, created_ts) VALUES (?1, ?2, 0)",
                [user, id],
            )
            .unwrap();
        };
        device("@alice:here", "A1");
        device("@carol:here", "C1");
        device("@alice:here", "A2");
        conn.execute("DELETE FROM devices WHERE device_id = 'A1'", [])
            .unwrap();
        // A remote user's row (from an EDU) is not ours to send.
        crate::storage::e2ee_keys::record_device_list_change(&conn, "@bob:there", Some("B"), None)
            .unwrap();
        let changes = local_changes_after(&conn, start, 100).unwrap();
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.user_id.as_str(), c.device_id.as_deref(), c.deleted))
            .collect();
        assert_eq!(
            summary,
            [
                ("@alice:here", Some("A1"), false),
                ("@carol:here", Some("C1"), false),
                ("@alice:here", Some("A2"), false),
                ("@alice:here", Some("A1"), true),
            ]
        );
        // Each of alice's changes names her previous one; carol's first names none.
        let prev = |i: usize| {
            last_device_change_before(&conn, &changes[i].user_id, changes[i].stream_position)
                .unwrap()
        };
        assert_eq!(prev(0), None);
        assert_eq!(prev(1), None);
        assert_eq!(prev(2), Some(changes[0].stream_position));
        assert_eq!(prev(3), Some(changes[2].stream_position));
        assert_eq!(
            last_device_change_before(&conn, "@alice:here", i64::MAX).unwrap(),
            Some(changes[3].stream_position)
        );
    }

    #[test]
    fn a_to_device_message_id_is_taken_once_per_origin() {
        let (_dir, conn) = open();
        assert!(mark_to_device_seen(&conn, "there", "m1", 10).unwrap());
        assert!(!mark_to_device_seen(&conn, "there", "m1", 11).unwrap());
        assert!(mark_to_device_seen(&conn, "elsewhere", "m1", 12).unwrap());
        assert_eq!(prune_to_device_seen(&conn, 11).unwrap(), 1);
        assert!(mark_to_device_seen(&conn, "there", "m1", 13).unwrap());
    }
}
