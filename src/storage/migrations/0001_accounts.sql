-- Accounts, devices, access tokens and registration tokens.
-- Times are milliseconds since the Unix epoch, as everywhere in Matrix.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,              -- full Matrix ID, @localpart:server
    localpart     TEXT NOT NULL UNIQUE,
    password_hash TEXT,                          -- argon2id PHC string; NULL: no password login
    is_admin      INTEGER NOT NULL DEFAULT 0,
    deactivated   INTEGER NOT NULL DEFAULT 0,
    created_ts    INTEGER NOT NULL,
    displayname   TEXT,
    avatar_url    TEXT
) STRICT;

CREATE TABLE devices (
    user_id       TEXT NOT NULL REFERENCES users(user_id),
    device_id     TEXT NOT NULL,
    display_name  TEXT,
    created_ts    INTEGER NOT NULL,
    last_seen_ip  TEXT,
    last_seen_ts  INTEGER,
    PRIMARY KEY (user_id, device_id)
) STRICT;

-- Tokens are stored as their SHA-256, so a copy of the database does not log anyone in.
CREATE TABLE access_tokens (
    token_hash    BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    created_ts    INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX access_tokens_by_device ON access_tokens(user_id, device_id);

-- Synapse's registration tokens: `uses_allowed` NULL means unlimited, `expiry_time` NULL never.
CREATE TABLE registration_tokens (
    token         TEXT PRIMARY KEY,
    uses_allowed  INTEGER,
    completed     INTEGER NOT NULL DEFAULT 0,
    expiry_time   INTEGER,
    created_ts    INTEGER NOT NULL
) STRICT;
