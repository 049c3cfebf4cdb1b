-- End-to-end encryption across servers (services/e2ee/federation.rs): the cached device lists of
-- other servers' users, the to-device messages already received from other servers, and how far
-- this server's own device-list changes were queued for other servers.

-- A user of another server whose device list this server follows (someone sharing a room with
-- one of our users): the `stream_id` of the last `m.device_list_update` applied (the next
-- update's `prev_id` must name it, otherwise the list is fetched again with `/user/devices`) and
-- the user's cross-signing keys as their server gave them. A user without a row is asked over
-- federation on every `/keys/query`.
CREATE TABLE remote_device_lists (
    user_id           TEXT PRIMARY KEY,
    stream_id         INTEGER NOT NULL,
    master_key        TEXT,                      -- JSON, NULL: none
    self_signing_key  TEXT                       -- JSON, NULL: none
) STRICT;

-- The devices of the users in `remote_device_lists`.
CREATE TABLE remote_devices (
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    display_name  TEXT,
    key_json      TEXT,                          -- the device keys, NULL: none uploaded
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id) REFERENCES remote_device_lists(user_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- A cached list is only kept up to date while a room is shared (the user's server sends updates
-- only then): when the last room shared with our users ends (a leave, kick or ban of either
-- side), the cache goes, and a later /keys/query fetches the list again.
CREATE TRIGGER remote_device_lists_on_leave AFTER UPDATE OF membership ON memberships
WHEN old.membership = 'join' AND new.membership != 'join'
BEGIN
    DELETE FROM remote_device_lists WHERE user_id IN (
        SELECT user_id FROM memberships WHERE room_id = new.room_id
    ) AND NOT EXISTS (
        -- storage::rooms::shares_a_room_with_a_local_user, its join order forced likewise
        SELECT 1 FROM memberships theirs
        CROSS JOIN users u
        CROSS JOIN memberships mine
        WHERE theirs.user_id = remote_device_lists.user_id AND theirs.membership = 'join'
          AND mine.room_id = theirs.room_id AND mine.user_id = u.user_id
          AND mine.membership = 'join'
    );
END;

-- `m.direct_to_device` message IDs received, per origin: a message sent again (a retried
-- transaction the first answer of which was lost) is delivered once. Kept for a day.
CREATE TABLE federation_to_device_seen (
    origin       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    received_ts  INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX federation_to_device_seen_by_ts ON federation_to_device_seen(received_ts);

-- The position in `device_list_changes` up to which our users' changes were turned into EDUs
-- for other servers. Changes from before this migration are history: nobody waits for them.
CREATE TABLE device_list_outbound_position (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    position  INTEGER NOT NULL
) STRICT;
INSERT INTO device_list_outbound_position (id, position)
    SELECT 1, position FROM stream_position WHERE id = 1;

-- To-device messages for other servers now go straight into the federation sender's EDU queue
-- (`federation_outbound_edus`); what waited in the old outbox moves there.
INSERT INTO federation_outbound_edus (destination, edu_type, content)
    SELECT destination, 'm.direct_to_device', json_object(
        'edu_type', 'm.direct_to_device',
        'content', json_object('sender', sender, 'type', type, 'message_id', message_id,
                               'messages', json(messages)))
    FROM to_device_outbox ORDER BY stream_position;
DROP TABLE to_device_outbox;
