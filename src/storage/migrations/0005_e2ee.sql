-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and their
-- signatures, device-list changes, to-device messages and server-side key backups.
--
-- The server never sees plaintext: it stores what clients upload as they uploaded it (the JSON
-- text, so that signatures over it stay verifiable) and routes it.
--
-- Everything that belongs to a device hangs off `devices` with ON DELETE CASCADE, so deleting a
-- device (logout, the devices API, a password change that signs out, deactivation, the admin
-- CLI) removes its keys and its to-device inbox in the same transaction.

-- The identity keys a device uploaded (`/keys/upload` `device_keys`), verbatim.
CREATE TABLE device_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- One-time keys, each claimed at most once (`/keys/claim` deletes the row). The rowid orders
-- them oldest first.
CREATE TABLE one_time_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,                    -- e.g. signed_curve25519
    key_id     TEXT NOT NULL,                    -- the part after `algorithm:`
    key_json   TEXT NOT NULL,
    UNIQUE (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;

-- At most one fallback key per device and algorithm; handed out (and marked used) when the
-- one-time keys run out, until the device uploads a new one.
CREATE TABLE fallback_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- A user's current cross-signing keys, verbatim with the signatures they were uploaded with.
CREATE TABLE cross_signing_keys (
    user_id     TEXT NOT NULL,
    key_type    TEXT NOT NULL,                   -- master, self_signing, user_signing
    public_key  TEXT NOT NULL,                   -- unpadded base64 ed25519 key
    key_json    TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
) STRICT, WITHOUT ROWID;

-- Signatures added later with `/keys/signatures/upload`, merged into the signed key when it is
-- queried. `target_key_id` is a device ID or a cross-signing public key.
CREATE TABLE key_signatures (
    target_user_id  TEXT NOT NULL,
    target_key_id   TEXT NOT NULL,
    signer_user_id  TEXT NOT NULL,
    signer_key_id   TEXT NOT NULL,               -- ed25519:<device ID or public key>
    signature       TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
) STRICT, WITHOUT ROWID;

-- Every change of a user's device list (a device added, renamed or deleted, new identity or
-- cross-signing keys, new signatures), positioned in the shared stream so that /sync's
-- `device_lists.changed` and `/keys/changes` read the changes between two tokens.
--
-- Federation: a row of a local user is an `m.device_list_update` EDU to send to every server
-- that shares a room with that user (`device_id` and `deleted` fill the EDU; `stream_position`
-- is its `stream_id`, the user's previous row its `prev_id`). Rows of remote users will be
-- written when their servers send such EDUs. `visible_to` rows (a signature made with someone's
-- user-signing key, which only the signer may see) are never sent.
CREATE TABLE device_list_changes (
    stream_position  INTEGER PRIMARY KEY,
    user_id          TEXT NOT NULL,
    device_id        TEXT,                       -- NULL: the user's cross-signing keys
    deleted          INTEGER NOT NULL DEFAULT 0,
    visible_to       TEXT                        -- NULL: everyone sharing a room with user_id
) STRICT;
CREATE INDEX device_list_changes_by_user ON device_list_changes(user_id, stream_position);

-- A new device, a renamed device and a deleted device are device-list changes whichever code path
-- did it; a deleted device's signatures go with it.
CREATE TRIGGER device_list_on_insert AFTER INSERT ON devices
BEGIN
    UPDATE stream_position SET position = position + 1 WHERE id = 1;
    INSERT INTO device_list_changes (stream_position, user_id, device_id)
        VALUES ((SELECT position FROM stream_position WHERE id = 1), new.user_id, new.device_id);
END;

CREATE TRIGGER device_list_on_rename AFTER UPDATE OF display_name ON devices
WHEN new.display_name IS NOT old.display_name
BEGIN
    UPDATE stream_position SET position = position + 1 WHERE id = 1;
    INSERT INTO device_list_changes (stream_position, user_id, device_id)
        VALUES ((SELECT position FROM stream_position WHERE id = 1), new.user_id, new.device_id);
END;

CREATE TRIGGER device_list_on_delete AFTER DELETE ON devices
BEGIN
    UPDATE stream_position SET position = position + 1 WHERE id = 1;
    INSERT INTO device_list_changes (stream_position, user_id, device_id, deleted)
        VALUES ((SELECT position FROM stream_position WHERE id = 1), old.user_id, old.device_id, 1);
    DELETE FROM key_signatures WHERE target_user_id = old.user_id AND target_key_id = old.device_id;
END;

-- To-device messages waiting for a local device. A message stays until the device syncs with a
-- token past its `stream_position` (the spec's acknowledgement), so a lost /sync response is
-- delivered again.
CREATE TABLE to_device_inbox (
    stream_position  INTEGER PRIMARY KEY,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    sender           TEXT NOT NULL,
    type             TEXT NOT NULL,
    content          TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX to_device_inbox_by_device ON to_device_inbox(user_id, device_id, stream_position);

-- To-device messages for users on other servers, one row per destination and send: the
-- `m.direct_to_device` EDU the federation sender will deliver (and then delete) as it is.
CREATE TABLE to_device_outbox (
    stream_position  INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,              -- server name
    sender           TEXT NOT NULL,
    type             TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    messages         TEXT NOT NULL               -- {user ID: {device ID or *: content}}
) STRICT;
CREATE INDEX to_device_outbox_by_destination ON to_device_outbox(destination, stream_position);

-- Idempotent `/sendToDevice`: one send per (user, device, txnId).
CREATE TABLE to_device_transactions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Server-side key backup versions. Versions count up per user and are never reused; the current
-- version is the newest one not deleted. `etag` changes whenever the version's keys change.
CREATE TABLE backup_versions (
    user_id    TEXT NOT NULL,
    version    INTEGER NOT NULL,
    algorithm  TEXT NOT NULL,
    auth_data  TEXT NOT NULL,                    -- JSON object
    etag       INTEGER NOT NULL DEFAULT 0,
    deleted    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
) STRICT, WITHOUT ROWID;

-- The backed-up (client-encrypted) session keys of a version.
CREATE TABLE backup_keys (
    user_id              TEXT NOT NULL,
    version              INTEGER NOT NULL,
    room_id              TEXT NOT NULL,
    session_id           TEXT NOT NULL,
    first_message_index  INTEGER NOT NULL,
    forwarded_count      INTEGER NOT NULL,
    is_verified          INTEGER NOT NULL,
    session_data         TEXT NOT NULL,          -- JSON object, encrypted by the client
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES backup_versions(user_id, version) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
