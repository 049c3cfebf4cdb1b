-- Delayed events (MSC4140): events a user asked to be sent later (`?org.matrix.msc4140.delay=`),
-- as Synapse's `delayed_events`. A row is written before the client hears its `delay_id`, so a
-- scheduled event survives a restart; it is deleted once sent or cancelled.
CREATE TABLE delayed_events (
    delay_id       TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    -- The device that scheduled it: the event is sent as from that device.
    device_id      TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    state_key      TEXT,                  -- NULL for a message event
    content        TEXT NOT NULL,         -- the JSON the client sent
    delay_ms       INTEGER NOT NULL,
    send_ts        INTEGER NOT NULL,      -- due at: scheduled (or last restarted) + delay
    -- The stream position when it was scheduled: only state set after it cancels the event.
    stream_at_creation INTEGER NOT NULL,
    -- Taken for sending (due, or `send` asked): no longer cancelled or restarted. A row still
    -- taken at start-up was cut off by a stop and is sent again (idempotently).
    processing     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX delayed_events_due ON delayed_events(processing, send_ts);
CREATE INDEX delayed_events_by_user ON delayed_events(user_id, send_ts);

-- Idempotent scheduling: a retried `PUT …/send/{type}/{txnId}?org.matrix.msc4140.delay=` gets
-- the first request's `delay_id`.
CREATE TABLE delayed_event_transactions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    delay_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
) STRICT, WITHOUT ROWID;
