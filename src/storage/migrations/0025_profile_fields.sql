-- Extended profile fields (Matrix 1.16, MSC4133): every profile key of a local user other than
-- `displayname` and `avatar_url` (those stay in `users`), e.g. `m.tz` or a client's own keys;
-- `value` is the field's JSON value as canonical JSON.
CREATE TABLE profile_fields (
    user_id  TEXT NOT NULL,
    field    TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
) STRICT, WITHOUT ROWID;
