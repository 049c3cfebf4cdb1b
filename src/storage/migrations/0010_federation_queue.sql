-- The outbound federation sender (services/federation/sender.rs): what must still go to each
-- other server, the transaction being sent to it, and its backoff.

-- Local PDUs not yet acknowledged by a destination, in the order they were stored. Written in
-- the transaction that stores the event, so an acknowledged event is never lost to a crash.
CREATE TABLE federation_outbound_pdus (
    destination      TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,   -- the event's
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    PRIMARY KEY (destination, stream_ordering)
) STRICT, WITHOUT ROWID;

-- Durable EDUs (read receipts, typing) waiting for a destination, in order.
CREATE TABLE federation_outbound_edus (
    id           INTEGER PRIMARY KEY,
    destination  TEXT NOT NULL,
    edu_type     TEXT NOT NULL,
    content      TEXT NOT NULL            -- the whole EDU, JSON
) STRICT;
CREATE INDEX federation_outbound_edus_by_destination ON federation_outbound_edus(destination, id);

-- A destination that fell too far behind: its backlog was dropped and only the newest local
-- event of each room is sent when it comes back (it fetches the gap with get_missing_events).
CREATE TABLE federation_catch_up (
    destination      TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    PRIMARY KEY (destination, room_id)
) STRICT, WITHOUT ROWID;

-- Per destination: backoff (Synapse's `destinations` columns), the last success, and the
-- transaction being sent, so that a retry (after a failure or a restart) reuses its ID and
-- contents.
CREATE TABLE federation_destinations (
    destination       TEXT PRIMARY KEY,
    failure_ts        INTEGER,            -- when it started failing; NULL when up
    retry_last_ts     INTEGER NOT NULL DEFAULT 0,
    retry_interval    INTEGER NOT NULL DEFAULT 0,   -- ms; 0 when up
    last_success_ts   INTEGER,
    catching_up       INTEGER NOT NULL DEFAULT 0,
    txn_counter       INTEGER NOT NULL DEFAULT 0,
    txn_id            TEXT,               -- the transaction in flight, NULL when none
    txn_max_pdu       INTEGER,            -- its PDUs: the queued ones up to this stream ordering
    txn_max_edu       INTEGER,            -- its EDUs: the queued ones up to this id
    txn_catch_up      TEXT                -- or, catching up, the JSON list of its event IDs
) STRICT;
