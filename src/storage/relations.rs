//! Relations between events (`m.relates_to`, kept in the `relates_to`/`rel_type` columns of
//! `events`): pages of related events, the rows behind bundled aggregations, and thread roots.
//! Redacted events lose their relation, so they never count here.

use rusqlite::{Connection, params};

use super::rooms::TopoPosition;

/// Which related events a page asks for.
pub struct RelationQuery<'a> {
    pub room_id: &'a str,
    /// The event the others relate to.
    pub parent: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// 1: direct relations only; more: also events relating to those, up to this depth.
    pub depth: u32,
}

/// One event of a page of relations or threads, with the position the page is ordered by.
pub struct PagedEvent {
    pub event_id: String,
    /// The event's own position; for a thread root, that of its latest reply.
    pub position: TopoPosition,
}

/// Related events strictly before (`backwards`) or after `from` in topological order, nearest
/// first.
pub fn relations_page(
    conn: &Connection,
    query: &RelationQuery<'_>,
    from: TopoPosition,
    backwards: bool,
    limit: usize,
) -> rusqlite::Result<Vec<PagedEvent>> {
    let (compare, order) = if backwards {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let sql = format!(
        "WITH RECURSIVE related(event_id, depth) AS (
             SELECT event_id, 1 FROM events
             WHERE relates_to = ?1 AND room_id = ?2 AND redacted_by IS NULL
             UNION
             SELECT e.event_id, r.depth + 1 FROM events e JOIN related r ON e.relates_to = r.event_id
             WHERE r.depth < ?3 AND e.room_id = ?2 AND e.redacted_by IS NULL
         )
         SELECT e.event_id, e.topological_ordering, e.stream_ordering
         FROM related r JOIN events e ON e.event_id = r.event_id
         WHERE (?4 IS NULL OR e.rel_type = ?4) AND (?5 IS NULL OR e.type = ?5)
           AND (e.topological_ordering, e.stream_ordering) {compare} (?6, ?7)
         ORDER BY e.topological_ordering {order}, e.stream_ordering {order}
         LIMIT ?8"
    );
    conn.prepare_cached(&sql)?
        .query_map(
            params![
                query.parent,
                query.room_id,
                query.depth.max(1),
                query.rel_type,
                query.event_type,
                from.0,
                from.1,
                limit as i64
            ],
            paged_event,
        )?
        .collect()
}

/// One event that relates to another, as bundled aggregations need it.
#[derive(Debug, Clone)]
pub struct RelatedEvent {
    pub parent: String,
    pub rel_type: String,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub position: TopoPosition,
}

/// Every unredacted `m.replace`, `m.thread` and `m.reference` relation to any of `parents`, in one
/// indexed query: a join from the list of parents (`IN (SELECT value FROM json_each(..))` built a
/// temporary table, with a page cache of its own, on every call).
pub fn aggregated_relations(
    conn: &Connection,
    parents: &[&str],
) -> rusqlite::Result<Vec<RelatedEvent>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    // Each parent once: the join below gives a parent's relations once per time it is listed.
    let mut parents = parents.to_vec();
    parents.sort_unstable();
    parents.dedup();
    let ids = serde_json::to_string(&parents).map_err(|e| {
        rusqlite::Error::ToSqlConversionFailure(
            Box::new(e) as Box<dyn std::error::Error + Send + Sync>
        )
    })?;
    conn.prepare_cached(
        "SELECT e.relates_to, e.rel_type, e.event_id, e.room_id, e.type, e.sender,
                e.origin_server_ts, e.topological_ordering, e.stream_ordering
         FROM json_each(?1) parent CROSS JOIN events e
         WHERE e.relates_to = parent.value
           AND e.rel_type IN ('m.replace', 'm.thread', 'm.reference')
           AND e.redacted_by IS NULL",
    )?
    .query_map([ids], |row| {
        Ok(RelatedEvent {
            parent: row.get(0)?,
            rel_type: row.get(1)?,
            event_id: row.get(2)?,
            room_id: row.get(3)?,
            event_type: row.get(4)?,
            sender: row.get(5)?,
            origin_server_ts: row.get(6)?,
            position: (row.get(7)?, row.get(8)?),
        })
    })?
    .collect()
}

/// Thread roots of a room, by the position of their latest reply, newest first, strictly before
/// `before`. With `participant`, only threads that user started or replied to.
pub fn thread_roots(
    conn: &Connection,
    room_id: &str,
    before: TopoPosition,
    participant: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<PagedEvent>> {
    conn.prepare_cached(
        "SELECT t.root, latest.topological_ordering, latest.stream_ordering
         FROM (SELECT relates_to AS root, MAX(stream_ordering) AS last FROM events
               WHERE rel_type = 'm.thread' AND room_id = ?1 AND redacted_by IS NULL
               GROUP BY relates_to) t
         JOIN events latest ON latest.stream_ordering = t.last
         JOIN events root ON root.event_id = t.root AND root.room_id = ?1
         WHERE (latest.topological_ordering, latest.stream_ordering) < (?2, ?3)
           AND (?4 IS NULL OR root.sender = ?4 OR EXISTS (
                SELECT 1 FROM events r WHERE r.relates_to = t.root AND r.rel_type = 'm.thread'
                    AND r.sender = ?4 AND r.redacted_by IS NULL))
         ORDER BY latest.topological_ordering DESC, latest.stream_ordering DESC
         LIMIT ?5",
    )?
    .query_map(
        params![room_id, before.0, before.1, participant, limit as i64],
        paged_event,
    )?
    .collect()
}

/// A `PagedEvent` from the columns event ID, topological ordering, stream ordering.
fn paged_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<PagedEvent> {
    Ok(PagedEvent {
        event_id: row.get(0)?,
        position: (row.get(1)?, row.get(2)?),
    })
}
