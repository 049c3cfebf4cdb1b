//! OpenID tokens (`openid_tokens`, migration `0013_openid.sql`): the SHA-256 of each token, its
//! user and until when it is valid.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// Stores a new token and deletes the expired ones (so the table holds only live tokens).
pub fn insert_token(
    tx: &Transaction<'_>,
    token_hash: &[u8],
    user_id: &str,
    valid_until_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM openid_tokens WHERE valid_until_ms < ?1",
        [now_ms],
    )?;
    tx.execute(
        "INSERT INTO openid_tokens (token_hash, user_id, valid_until_ms) VALUES (?1, ?2, ?3)",
        params![token_hash, user_id, valid_until_ms],
    )?;
    Ok(())
}

/// The user of a token still valid at `now_ms` (Synapse's `now <= valid_until`).
pub fn token_user(
    conn: &Connection,
    token_hash: &[u8],
    now_ms: i64,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT user_id FROM openid_tokens WHERE token_hash = ?1 AND ?2 <= valid_until_ms",
    )?
    .query_row(params![token_hash, now_ms], |row| row.get(0))
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Database;

    /// A token is valid up to and including its last millisecond, then unknown; expired rows
    /// are deleted when the next token is made.
    #[tokio::test]
    async fn tokens_expire_and_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("test.db")).unwrap();
        db.write(|tx| insert_token(tx, b"old", "@a:example.org", 1_000, 0))
            .await
            .unwrap();
        let user = |hash: &'static [u8], now| db.read(move |c| token_user(c, hash, now));
        assert_eq!(
            user(b"old", 1_000).await.unwrap().as_deref(),
            Some("@a:example.org")
        );
        assert_eq!(user(b"old", 1_001).await.unwrap(), None);
        assert_eq!(user(b"unknown", 0).await.unwrap(), None);
        db.write(|tx| insert_token(tx, b"new", "@b:example.org", 5_000, 2_000))
            .await
            .unwrap();
        let hashes: Vec<Vec<u8>> = db
            .read(|c| {
                c.prepare("SELECT token_hash FROM openid_tokens")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .await
            .unwrap();
        assert_eq!(hashes, vec![b"new".to_vec()], "the expired token is gone");
    }
}
