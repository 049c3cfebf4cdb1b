-- Profile changes not yet copied into the user's member events (`Rooms::update_profile`):
-- written in the transaction of the change, deleted once every joined room has it, so that a
-- restart in between finishes the copy. `generation` grows with each change: a copy deletes the
-- row only if no newer change came meanwhile.
CREATE TABLE pending_profile_updates (
    user_id     TEXT PRIMARY KEY,
    generation  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
