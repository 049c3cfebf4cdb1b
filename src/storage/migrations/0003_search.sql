-- Server-side search and thread listings.
--
-- `event_search` is an FTS5 index of the searchable text of room events; its rowid is the event's
-- `stream_ordering`. Triggers fill it in the transaction that stores the event (so no code path
-- can store an event without indexing it) and drop an event's text as soon as a redaction applies
-- to it. Only `content.body` of `m.room.message`, `content.name` of `m.room.name` and
-- `content.topic` of `m.room.topic` are searchable, as the spec's `keys` name them.
CREATE VIRTUAL TABLE event_search USING fts5(
    body,
    name,
    topic,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER event_search_on_insert AFTER INSERT ON events
WHEN new.redacted_by IS NULL
 AND ((new.type = 'm.room.message' AND json_type(new.json, '$.content.body') = 'text')
   OR (new.type = 'm.room.name' AND json_type(new.json, '$.content.name') = 'text')
   OR (new.type = 'm.room.topic' AND json_type(new.json, '$.content.topic') = 'text'))
BEGIN
    INSERT INTO event_search (rowid, body, name, topic) VALUES (
        new.stream_ordering,
        CASE WHEN new.type = 'm.room.message' THEN json_extract(new.json, '$.content.body') END,
        CASE WHEN new.type = 'm.room.name' THEN json_extract(new.json, '$.content.name') END,
        CASE WHEN new.type = 'm.room.topic' THEN json_extract(new.json, '$.content.topic') END
    );
END;

CREATE TRIGGER event_search_on_redact AFTER UPDATE OF redacted_by ON events
WHEN new.redacted_by IS NOT NULL AND old.redacted_by IS NULL
BEGIN
    DELETE FROM event_search WHERE rowid = new.stream_ordering;
END;

CREATE TRIGGER event_search_on_delete AFTER DELETE ON events
BEGIN
    DELETE FROM event_search WHERE rowid = old.stream_ordering;
END;

-- Index the events stored before this migration.
INSERT INTO event_search (rowid, body, name, topic)
SELECT stream_ordering,
       CASE WHEN type = 'm.room.message' THEN json_extract(json, '$.content.body') END,
       CASE WHEN type = 'm.room.name' THEN json_extract(json, '$.content.name') END,
       CASE WHEN type = 'm.room.topic' THEN json_extract(json, '$.content.topic') END
FROM events
WHERE redacted_by IS NULL
  AND ((type = 'm.room.message' AND json_type(json, '$.content.body') = 'text')
    OR (type = 'm.room.name' AND json_type(json, '$.content.name') = 'text')
    OR (type = 'm.room.topic' AND json_type(json, '$.content.topic') = 'text'));

-- `/threads`: the replies of each thread of a room, to find thread roots by latest activity.
CREATE INDEX events_thread_replies ON events(room_id, relates_to, stream_ordering)
    WHERE rel_type = 'm.thread';
