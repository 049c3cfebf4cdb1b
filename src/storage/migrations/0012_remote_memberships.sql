-- A local user's membership in a room this server does not hold: an invite another server sent
-- (`PUT /invite`), a knock sent through another server, and the leave that ends either (a
-- rejected invite, a withdrawn knock). /sync shows these rooms from here: the member event (the
-- PDU, signed) and the stripped state the other server gave. The newest of this row and the
-- user's row in `memberships` (by stream position) is the user's membership in the room.
CREATE TABLE remote_memberships (
    room_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    membership       TEXT NOT NULL CHECK (membership IN ('invite', 'knock', 'leave')),
    event_id         TEXT NOT NULL,
    room_version     TEXT NOT NULL,
    -- the member event's PDU
    event_json       TEXT NOT NULL,
    -- JSON array of stripped state events (`type`, `state_key`, `sender`, `content`)
    stripped_state   TEXT NOT NULL,
    -- JSON array of server names that can be asked about the room (the inviter's first)
    servers          TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    forgotten        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX remote_memberships_by_user ON remote_memberships(user_id);
