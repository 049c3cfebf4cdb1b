-- Presence: each user's latest state, positioned in the shared stream (`stream_position`) so that
-- /sync reports the changes since its token. Activity between changes (every /sync bumps it) is
-- kept in memory; `last_active_ts` is written with each change.
CREATE TABLE presence (
    user_id           TEXT PRIMARY KEY,
    state             TEXT NOT NULL,             -- online, unavailable, offline
    status_msg        TEXT,
    last_active_ts    INTEGER NOT NULL,          -- ms since the epoch; 0: never active
    currently_active  INTEGER NOT NULL,          -- 0 or 1
    stream_position   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX presence_by_position ON presence(stream_position);
