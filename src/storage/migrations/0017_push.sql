-- Pushers (`POST /pushers/set`): one row per (app_id, pushkey, user). A pusher belongs to the
-- device (access token) that set it, and goes with it: logout, device deletion, a password change
-- that signs the other devices out, deactivation (ON DELETE CASCADE), as in Synapse.
--
-- Delivery (`services/pusher.rs`) follows the stream: `last_stream_ordering` is the position up
-- to which every notification has been delivered (Synapse's column of that name), so a restart
-- starts again there: at least once, never an event skipped. A failing gateway's backoff is kept
-- here too (`failing_since`, `retry_at`, `backoff_ms`) so that it survives a restart.
CREATE TABLE pushers (
    user_id               TEXT NOT NULL,
    device_id             TEXT NOT NULL,
    app_id                TEXT NOT NULL,
    pushkey               TEXT NOT NULL,
    -- The pusher as the client set it (ruma's `Pusher`), shown by `GET /pushers`.
    pusher                TEXT NOT NULL,
    -- The push gateway's URL (`data.url`).
    url                   TEXT NOT NULL,
    -- When the pushkey was set (ms): `pushkey_ts` of the Push Gateway API, in seconds.
    pushkey_ts            INTEGER NOT NULL,
    last_stream_ordering  INTEGER NOT NULL,
    failing_since         INTEGER,
    retry_at              INTEGER,
    backoff_ms            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, pushkey, user_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX pushers_by_user ON pushers(user_id);
CREATE INDEX pushers_by_device ON pushers(user_id, device_id);
