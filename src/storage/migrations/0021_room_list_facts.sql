-- What sliding sync's lists sort and filter every room of a user by (storage/sliding_sync.rs),
-- kept per room as events are stored instead of found by walking each room's events on every
-- request: the stream position of the room's newest "bump" event (the event types that move a
-- room up Element X's room list) and the `content.type` of its `m.room.create` (`m.space`, ...).
-- `rooms::insert_event_row` keeps both up to date.
CREATE TABLE room_list_facts (
    room_id      TEXT PRIMARY KEY,
    bump_stream  INTEGER,     -- the greatest stream_ordering of a bump event in `events`
    room_type    TEXT         -- m.room.create's content.type when it is a string
) STRICT, WITHOUT ROWID;

INSERT INTO room_list_facts (room_id, bump_stream, room_type)
SELECT r.room_id,
       (SELECT max(e.stream_ordering) FROM events e
         WHERE e.room_id = r.room_id
           AND e.type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
                          'm.call.invite', 'm.poll.start', 'm.beacon_info')),
       (SELECT CASE WHEN json_type(e.json, '$.content.type') = 'text'
                    THEN json_extract(e.json, '$.content.type') END
          FROM events e
         WHERE e.room_id = r.room_id AND e.type = 'm.room.create' AND e.state_key = ''
         ORDER BY e.stream_ordering LIMIT 1)
  FROM rooms r;
