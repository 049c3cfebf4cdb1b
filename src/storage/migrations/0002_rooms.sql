-- Rooms and events. Every event is a complete signed PDU (column `json`, canonical JSON).
--
-- Orderings: `stream_ordering` is the global order in which this server learnt of events (sync
-- tokens); `topological_ordering` is the event's depth in the room DAG (pagination). For local
-- events both grow together; events that arrive late over federation get a new stream position
-- but keep their depth.

-- One sequence for everything sync reports (events, account data, receipts): a sync token is a
-- position in it.
CREATE TABLE stream_position (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    position  INTEGER NOT NULL
) STRICT;
INSERT INTO stream_position (id, position) VALUES (1, 0);

CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY,
    room_version  TEXT NOT NULL,
    creator       TEXT NOT NULL,
    created_ts    INTEGER NOT NULL,
    published     INTEGER NOT NULL DEFAULT 0     -- listed in the public room directory
) STRICT;

CREATE TABLE events (
    stream_ordering      INTEGER PRIMARY KEY,
    event_id             TEXT NOT NULL UNIQUE,
    room_id              TEXT NOT NULL REFERENCES rooms(room_id),
    type                 TEXT NOT NULL,
    state_key            TEXT,                   -- NULL for non-state events
    sender               TEXT NOT NULL,
    origin_server_ts     INTEGER NOT NULL,
    topological_ordering INTEGER NOT NULL,       -- depth
    state_group          INTEGER NOT NULL,       -- the room state after this event
    redacts              TEXT,
    redacted_by          TEXT,                   -- set when a redaction applies to this event
    relates_to           TEXT,                   -- m.relates_to.event_id, for relations/threads
    rel_type             TEXT,
    json                 TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_room_stream ON events(room_id, stream_ordering);
CREATE INDEX events_by_room_topo ON events(room_id, topological_ordering, stream_ordering);
CREATE INDEX events_by_relation ON events(relates_to, rel_type) WHERE relates_to IS NOT NULL;

-- State at every event, as snapshots plus deltas: a group is its `prev_group`'s state with its own
-- rows laid over it (a row with event_id NULL removes a key). Chains are cut at a bounded length
-- by writing a snapshot (prev_group NULL), so reading the state at any event stays cheap.
CREATE TABLE state_groups (
    id          INTEGER PRIMARY KEY,
    room_id     TEXT NOT NULL,
    prev_group  INTEGER REFERENCES state_groups(id),
    chain_len   INTEGER NOT NULL
) STRICT;
CREATE TABLE state_group_entries (
    state_group INTEGER NOT NULL REFERENCES state_groups(id),
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT,
    PRIMARY KEY (state_group, type, state_key)
) STRICT, WITHOUT ROWID;

-- The resolved current state of each room, kept beside the groups for fast reads.
CREATE TABLE current_state (
    room_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
) STRICT, WITHOUT ROWID;

-- Current membership of every user in every room they ever touched ("rooms of this user").
CREATE TABLE memberships (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    membership       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    forgotten        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships(user_id, membership);

-- The events of a room that nothing refers to yet: the `prev_events` of the next event.
CREATE TABLE forward_extremities (
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT, WITHOUT ROWID;

-- Idempotent sends: one event per (user, device, txnId).
CREATE TABLE event_transactions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL
) STRICT;
CREATE INDEX room_aliases_by_room ON room_aliases(room_id);

-- Global (room_id '') and per-room account data; the latest write of each type wins.
CREATE TABLE account_data (
    user_id          TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    content          TEXT NOT NULL,
    stream_position  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
) STRICT, WITHOUT ROWID;
CREATE INDEX account_data_by_position ON account_data(user_id, stream_position);

-- Read receipts: the latest per (room, user, receipt type, thread).
CREATE TABLE receipts (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    receipt_type     TEXT NOT NULL,
    thread_id        TEXT NOT NULL,              -- '' for unthreaded
    event_id         TEXT NOT NULL,
    ts               INTEGER NOT NULL,
    stream_position  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX receipts_by_position ON receipts(room_id, stream_position);

CREATE TABLE filters (
    user_id    TEXT NOT NULL,
    filter_id  INTEGER NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
) STRICT, WITHOUT ROWID;
