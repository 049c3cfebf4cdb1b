-- Thumbnails other servers made of their own media, asked for when a client wants a thumbnail of
-- remote media whose original is not cached here (the original is fetched only when the other
-- server cannot make one). A cache like remote media: the bytes in the media store by SHA-256,
-- counted in `max_remote_media_cache_size`, purged by `media_retention.remote_media_lifetime`.
CREATE TABLE remote_thumbnails (
    origin          TEXT NOT NULL,
    media_id        TEXT NOT NULL,
    width           INTEGER NOT NULL,          -- as requested
    height          INTEGER NOT NULL,
    method          TEXT NOT NULL,             -- 'crop' or 'scale'
    content_type    TEXT,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    created_ts      INTEGER NOT NULL,
    last_access_ts  INTEGER NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
) STRICT, WITHOUT ROWID;
CREATE INDEX remote_thumbnails_by_sha256 ON remote_thumbnails(sha256);
CREATE INDEX remote_thumbnails_by_last_access ON remote_thumbnails(last_access_ts);
