//! Table `server_keys`: other servers' public signing keys, as fetched.

use rusqlite::{Connection, params};

/// One stored public key of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredServerKey {
    pub key_id: String,
    /// Unpadded base64.
    pub key: String,
    pub valid_until_ts: i64,
    /// Set for a key from `old_verify_keys`: the last time it was used.
    pub expired_ts: Option<i64>,
}

impl StoredServerKey {
    /// The last `origin_server_ts` this key's signatures are good for.
    pub fn good_until_ts(&self) -> i64 {
        self.expired_ts.unwrap_or(self.valid_until_ts)
    }
}

/// Every stored key of `server_name`.
pub fn keys_of(conn: &Connection, server_name: &str) -> rusqlite::Result<Vec<StoredServerKey>> {
    conn.prepare_cached(
        "SELECT key_id, key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = ?1",
    )?
    .query_map([server_name], |row| {
        Ok(StoredServerKey {
            key_id: row.get(0)?,
            key: row.get(1)?,
            valid_until_ts: row.get(2)?,
            expired_ts: row.get(3)?,
        })
    })?
    .collect()
}

/// The distinct signed answers holding keys of `server_name` among `key_ids` (all when empty)
/// good at `minimum_ts`.
pub fn answers_of(
    conn: &Connection,
    server_name: &str,
    key_ids: &[String],
    minimum_ts: i64,
) -> rusqlite::Result<Vec<String>> {
    let rows = conn
        .prepare_cached(
            "SELECT key_id, answer FROM server_keys
             WHERE server_name = ?1 AND coalesce(expired_ts, valid_until_ts) >= ?2",
        )?
        .query_map(params![server_name, minimum_ts], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut answers: Vec<String> = Vec::new();
    for (key_id, answer) in rows {
        if (key_ids.is_empty() || key_ids.contains(&key_id)) && !answers.contains(&answer) {
            answers.push(answer);
        }
    }
    Ok(answers)
}

/// Stores keys of `server_name` from one signed `answer`. A stored key is replaced only by a
/// row that is good for longer, so an older answer (a notary's cache) never shortens what is
/// known; the key itself never changes under its ID.
pub fn put(
    conn: &Connection,
    server_name: &str,
    keys: &[StoredServerKey],
    answer: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO server_keys (server_name, key_id, key, valid_until_ts, expired_ts, answer,
             fetched_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (server_name, key_id) DO UPDATE SET
             valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
             answer = excluded.answer, fetched_ts = excluded.fetched_ts
         WHERE server_keys.key = excluded.key
           AND coalesce(excluded.expired_ts, excluded.valid_until_ts)
               > coalesce(server_keys.expired_ts, server_keys.valid_until_ts)",
    )?;
    for key in keys {
        statement.execute(params![
            server_name,
            key.key_id,
            key.key,
            key.valid_until_ts,
            key.expired_ts,
            answer,
            now_ms
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_for_their_longest_validity() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        let key = |valid_until_ts, expired_ts| StoredServerKey {
            key_id: "ed25519:a".to_owned(),
            key: "AAAA".to_owned(),
            valid_until_ts,
            expired_ts,
        };
        put(&conn, "remote.test", &[key(100, None)], "{}", 1).unwrap();
        put(&conn, "remote.test", &[key(50, None)], "{}", 2).unwrap();
        assert_eq!(keys_of(&conn, "remote.test").unwrap(), vec![key(100, None)]);
        put(&conn, "remote.test", &[key(10, Some(200))], "{\"a\":1}", 3).unwrap();
        assert_eq!(
            keys_of(&conn, "remote.test").unwrap(),
            vec![key(10, Some(200))]
        );
        // Another key under the same ID is not believed.
        let mut other = key(1000, None);
        other.key = "BBBB".to_owned();
        put(&conn, "remote.test", &[other], "{}", 4).unwrap();
        assert_eq!(keys_of(&conn, "remote.test").unwrap()[0].key, "AAAA");
        assert!(keys_of(&conn, "other.test").unwrap().is_empty());
        assert_eq!(
            answers_of(&conn, "remote.test", &[], 150).unwrap(),
            vec!["{\"a\":1}".to_owned()]
        );
        assert!(
            answers_of(&conn, "remote.test", &[], 250)
                .unwrap()
                .is_empty()
        );
        assert!(
            answers_of(&conn, "remote.test", &["ed25519:b".to_owned()], 0)
                .unwrap()
                .is_empty()
        );
    }
}
