-- Abuse reports from users (`POST /rooms/{roomId}/report/{eventId}` and `/rooms/{roomId}/report`),
-- for the server's admins to read and resolve with `appliance admin reports`. `event_id` is NULL
-- for a report about a whole room.
CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    reporter     TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    event_id     TEXT,
    -- The reported event's sender, kept so that the report still says who once the event is gone.
    event_sender TEXT,
    reason       TEXT,
    received_ts  INTEGER NOT NULL,
    resolved_ts  INTEGER,
    resolved_by  TEXT
) STRICT;
CREATE INDEX reports_unresolved ON reports(resolved_ts, id);

-- Guest accounts (`POST /register?kind=guest`, with `allow_guest_access`): no password, a
-- numeric localpart, and only the client API calls the spec allows guests. Upgrading a guest to a
-- full account clears the flag and sets a password; the user ID and its rooms stay.
ALTER TABLE users ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;
