-- The media repository. A row per media ID (`mxc://<origin>/<media_id>`): local uploads
-- (origin = this server) and, later, cached copies of other servers' media. The bytes live in
-- the media store on disk, once per SHA-256 (`sha256`), however many IDs point at them; a
-- thumbnail is a file beside its content, with no row of its own.
CREATE TABLE media (
    origin          TEXT NOT NULL,
    media_id        TEXT NOT NULL,
    uploader        TEXT,                     -- local user; NULL for remote media
    content_type    TEXT,
    filename        TEXT,
    size            INTEGER,                  -- NULL until the content is uploaded (async create)
    sha256          TEXT,                     -- hex; NULL until uploaded
    created_ts      INTEGER NOT NULL,         -- ms since the epoch: /create or upload
    uploaded_ts     INTEGER,
    last_access_ts  INTEGER,
    authenticated   INTEGER NOT NULL,         -- 1: only the authenticated endpoints serve it
    PRIMARY KEY (origin, media_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX media_by_uploader ON media(uploader, created_ts) WHERE uploader IS NOT NULL;
CREATE INDEX media_by_sha256 ON media(sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX media_by_last_access ON media(origin, last_access_ts);
