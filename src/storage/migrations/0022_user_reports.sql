-- Reports about a user (`POST /users/{userId}/report`, spec 1.14) join the abuse reports: such a
-- report has no room, so `room_id` becomes optional (SQLite cannot drop a NOT NULL: the table is
-- rebuilt) and `reported_user` names the user. Exactly one of the two is set.
CREATE TABLE reports_new (
    id            INTEGER PRIMARY KEY,
    reporter      TEXT NOT NULL,
    room_id       TEXT,
    event_id      TEXT,
    -- The reported event's sender, kept so that the report still says who once the event is gone.
    event_sender  TEXT,
    reported_user TEXT,
    reason        TEXT,
    received_ts   INTEGER NOT NULL,
    resolved_ts   INTEGER,
    resolved_by   TEXT,
    CHECK ((room_id IS NULL) != (reported_user IS NULL))
) STRICT;
INSERT INTO reports_new (id, reporter, room_id, event_id, event_sender, reason, received_ts,
                         resolved_ts, resolved_by)
    SELECT id, reporter, room_id, event_id, event_sender, reason, received_ts, resolved_ts,
           resolved_by
    FROM reports;
DROP TABLE reports;
ALTER TABLE reports_new RENAME TO reports;
CREATE INDEX reports_unresolved ON reports(resolved_ts, id);
