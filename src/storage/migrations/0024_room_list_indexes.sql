-- Sliding sync's room list reads every room of the user on each first response
-- (storage/sliding_sync.rs `listed_rooms`): each membership row, and whether the room is encrypted.
--
-- The user's memberships come from their index alone (membership, stream position and event
-- ID are in it) instead of one lookup in `memberships` per room. It keeps the old index's
-- columns first, so the statements that used `memberships_by_user` use it as before.
DROP INDEX memberships_by_user;
CREATE INDEX memberships_by_user
    ON memberships(user_id, membership, forgotten, stream_ordering, event_id);

-- The encrypted rooms: a small index of their `m.room.encryption` instead of a lookup in all the
-- current state of every room.
CREATE INDEX current_state_encryption ON current_state(room_id)
    WHERE type = 'm.room.encryption' AND state_key = '';
