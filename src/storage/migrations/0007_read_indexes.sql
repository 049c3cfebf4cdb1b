-- Indexes for the reads of every /sync.

-- Notification counts look at the newest events of each joined room: who sent them, whether
-- they are in a thread, whether they were redacted. Carrying those columns in the room's
-- stream index answers that without reading the events' rows (mostly their JSON).
DROP INDEX events_by_room_stream;
CREATE INDEX events_by_room_stream
    ON events(room_id, stream_ordering, sender, rel_type, relates_to, redacted_by);

-- A client's own events carry their transaction ID: found by event, not by scanning every
-- transaction of the device.
CREATE INDEX event_transactions_by_event ON event_transactions(event_id);
