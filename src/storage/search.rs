//! Full-text search over room events: the FTS5 table `event_search` (rowid = the event's
//! `stream_ordering`; columns `body`, `name`, `topic`).
//!
//! Triggers on `events` (migration `0003_search.sql`) keep the index in step inside the same
//! transaction as the event itself: an `m.room.message` body, `m.room.name` name or `m.room.topic`
//! topic is indexed when the event is inserted, and dropped when a redaction applies to it.
//! The migration indexes the events stored before it; no write path can forget the index.

use rusqlite::{Connection, params};

/// One word or quoted phrase of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm {
    pub text: String,
    /// A bare word also matches words it begins (`hel` finds `hello`).
    pub prefix: bool,
    /// Results must not contain it.
    pub negated: bool,
    /// Joined to the term before with OR instead of AND.
    pub or: bool,
}

/// The FTS5 query for `terms` in `columns` (a subset of `body`, `name`, `topic`); `None` when
/// nothing positive is searched for.
pub fn match_expression(terms: &[SearchTerm], columns: &[&str]) -> Option<String> {
    let mut expression = String::new();
    for term in terms {
        let quoted = format!(
            "\"{}\"{}",
            term.text.replace('"', "\"\""),
            if term.prefix { "*" } else { "" }
        );
        if expression.is_empty() {
            if term.negated {
                continue; // FTS5 NOT needs something on its left
            }
            expression = quoted;
        } else if term.negated {
            expression = format!("{expression} NOT {quoted}");
        } else if term.or {
            expression = format!("{expression} OR {quoted}");
        } else {
            expression = format!("{expression} AND {quoted}");
        }
    }
    if expression.is_empty() {
        return None;
    }
    let columns: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| matches!(*c, "body" | "name" | "topic"))
        .collect();
    if columns.is_empty() {
        return None;
    }
    Some(format!("{{{}}} : ({expression})", columns.join(" ")))
}

/// One indexed event that matched.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub sender: String,
    /// Higher is more relevant (BM25, negated so that it grows with relevance).
    pub rank: f64,
}

/// The unredacted events of `rooms` matching `expression`, best first (`by_rank`) or newest
/// first, at most `limit`.
pub fn search(
    conn: &Connection,
    expression: &str,
    rooms: &[String],
    by_rank: bool,
    limit: usize,
) -> rusqlite::Result<Vec<SearchHit>> {
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let rooms = serde_json::to_string(rooms).map_err(|e| {
        rusqlite::Error::ToSqlConversionFailure(
            Box::new(e) as Box<dyn std::error::Error + Send + Sync>
        )
    })?;
    let order = if by_rank {
        "bm25(event_search) ASC, e.stream_ordering DESC"
    } else {
        "e.stream_ordering DESC"
    };
    conn.prepare_cached(&format!(
        "SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.sender, -bm25(event_search)
         FROM event_search JOIN events e ON e.stream_ordering = event_search.rowid
         WHERE event_search MATCH ?1
           AND e.room_id IN (SELECT value FROM json_each(?2))
           AND e.redacted_by IS NULL
         ORDER BY {order}
         LIMIT ?3"
    ))?
    .query_map(params![expression, rooms, limit as i64], |row| {
        Ok(SearchHit {
            stream_ordering: row.get(0)?,
            event_id: row.get(1)?,
            room_id: row.get(2)?,
            event_type: row.get(3)?,
            sender: row.get(4)?,
            rank: row.get(5)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(text: &str, prefix: bool, negated: bool, or: bool) -> SearchTerm {
        SearchTerm {
            text: text.to_owned(),
            prefix,
            negated,
            or,
        }
    }

    #[test]
    fn builds_fts5_expressions() {
        let terms = [
            term("hello", true, false, false),
            term("big \"world\"", false, false, true),
            term("spam", true, true, false),
        ];
        assert_eq!(
            match_expression(&terms, &["body", "topic"]).as_deref(),
            Some("{body topic} : (\"hello\"* OR \"big \"\"world\"\"\" NOT \"spam\"*)")
        );
        assert_eq!(
            match_expression(&[term("x", true, true, false)], &["body"]),
            None
        );
        assert_eq!(
            match_expression(&[term("x", true, false, false)], &["bogus"]),
            None
        );
    }

    /// Events stored before the search migration are indexed by it; later ones by the triggers,
    /// which also drop redacted events.
    #[test]
    fn migration_indexes_old_events_and_triggers_follow() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("migrations/0001_accounts.sql"))
            .unwrap();
        conn.execute_batch(include_str!("migrations/0002_rooms.sql"))
            .unwrap();
        conn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r:x', '11', '@a:x', 0)",
            [],
        )
        .unwrap();
        let insert = |stream: i64, event_type: &str, content: &str| {
            conn.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, origin_server_ts,
                                     topological_ordering, state_group, json)
                 VALUES (?1, ?2, '!r:x', ?3, '@a:x', 0, ?1, 0, ?4)",
                params![
                    stream,
                    format!("$e{stream}"),
                    event_type,
                    format!("{{\"content\":{content}}}")
                ],
            )
            .unwrap();
        };
        insert(1, "m.room.message", r#"{"body": "old needle"}"#);
        insert(2, "m.room.topic", r#"{"topic": "needle topic"}"#);
        insert(3, "m.room.message", r#"{"body": 42}"#);
        conn.execute_batch(include_str!("migrations/0003_search.sql"))
            .unwrap();
        insert(4, "m.room.message", r#"{"body": "new needle"}"#);
        insert(
            5,
            "m.room.member",
            r#"{"body": "needle in a member event"}"#,
        );
        let rooms = vec!["!r:x".to_owned()];
        let found = |expression: &str| -> Vec<i64> {
            let mut streams: Vec<i64> = search(&conn, expression, &rooms, false, 10)
                .unwrap()
                .iter()
                .map(|hit| hit.stream_ordering)
                .collect();
            streams.sort();
            streams
        };
        assert_eq!(found("needle"), vec![1, 2, 4]);
        assert_eq!(found("{topic} : needle"), vec![2]);
        conn.execute(
            "UPDATE events SET redacted_by = '$x' WHERE stream_ordering = 4",
            [],
        )
        .unwrap();
        assert_eq!(found("needle"), vec![1, 2]);
        let indexed: i64 = conn
            .query_row("SELECT count(*) FROM event_search", [], |row| row.get(0))
            .unwrap();
        assert_eq!(indexed, 2, "redacted text leaves the index");
    }
}
