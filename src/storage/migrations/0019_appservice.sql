-- Application services (services/appservice/): how far each one's events were pushed. The sender
-- follows the stream (events, receipts); `position` is the last stream position delivered.
-- A transaction is stored (`pending_*`) before it is sent and cleared with the move of
-- `position` once the service answered 200, so a restart sends the same transaction again
-- (same ID: the service drops a repeat) and nothing is lost or reordered.
CREATE TABLE appservice_queue (
    id                TEXT PRIMARY KEY,     -- the registration's `id`
    position          INTEGER NOT NULL,
    next_txn_id       INTEGER NOT NULL DEFAULT 1,
    pending_txn_id    INTEGER,              -- NULL: no transaction waiting
    pending_body      TEXT,                 -- JSON: {"events": [...], "ephemeral": [...]}
    pending_position  INTEGER,              -- `position` once it is delivered
    last_txn_ts       INTEGER,              -- last delivered transaction (ms)
    failing_since     INTEGER,              -- first failure of the current streak (ms)
    retry_at          INTEGER,              -- no attempt before (ms)
    backoff_ms        INTEGER NOT NULL DEFAULT 0
) STRICT;
