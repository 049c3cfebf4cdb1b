-- Rooms shared with other servers: events outside the timeline, the DAG's edges, backward
-- extremities and the stream positions of backfilled events.

-- Events that are known but never in a room's timeline: `outlier` (an auth chain or room state
-- member, or an event whose place in the DAG is unknown), `rejected` (failed the authorization
-- rules: kept so that it is never fetched again, never used for auth) and `soft_failed` (passed
-- against the state before it, not against the room's current state: not shown, not a
-- `prev_event`). No client read of the timeline looks here. `state_group` is the state after the
-- event when it is known (for a rejected event: the state before it).
CREATE TABLE pdus_outside_timeline (
    event_id     TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('outlier', 'rejected', 'soft_failed')),
    reason       TEXT,
    type         TEXT NOT NULL,
    state_key    TEXT,
    sender       TEXT NOT NULL,
    depth        INTEGER NOT NULL,
    state_group  INTEGER,
    json         TEXT NOT NULL
) STRICT;
CREATE INDEX pdus_outside_timeline_by_room ON pdus_outside_timeline(room_id, status);

-- `prev_events` of every event in the timeline (and soft-failed ones), so that the graph can be
-- walked both ways: which events an event points at, and whether anything points at it.
CREATE TABLE event_edges (
    event_id       TEXT NOT NULL,
    prev_event_id  TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX event_edges_by_prev ON event_edges(prev_event_id);

-- `prev_events` this server does not hold: where /messages must backfill from. `depth` is the
-- greatest depth of the held events that point at it.
CREATE TABLE backward_extremities (
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    depth     INTEGER NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT, WITHOUT ROWID;

-- Backfilled events get stream positions below every live one, counting down from 0, so that a
-- /sync never takes them for new.
CREATE TABLE backfill_position (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    position  INTEGER NOT NULL
) STRICT;
INSERT INTO backfill_position (id, position) VALUES (1, 0);

-- The edges of the events stored before this migration.
INSERT OR IGNORE INTO event_edges (event_id, prev_event_id, room_id)
SELECT e.event_id, p.value, e.room_id FROM events e, json_each(e.json, '$.prev_events') p;

-- The state before an event whose state before is not its parent's state after (a remote event
-- with several parents or with state given by another server): `state_ids_before` and `/state_ids`.
CREATE TABLE event_state_before (
    event_id     TEXT PRIMARY KEY,
    state_group  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
