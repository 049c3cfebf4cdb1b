//! Table `media`: one row per media ID, pointing at its content by SHA-256.

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub origin: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// `None` while a `/create`d ID waits for its upload.
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub uploaded_ts: Option<i64>,
    pub last_access_ts: Option<i64>,
    pub authenticated: bool,
}

const COLUMNS: &str = "origin, media_id, uploader, content_type, filename, size, sha256, \
                       created_ts, uploaded_ts, last_access_ts, authenticated";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRow> {
    Ok(MediaRow {
        origin: row.get(0)?,
        media_id: row.get(1)?,
        uploader: row.get(2)?,
        content_type: row.get(3)?,
        filename: row.get(4)?,
        size: row.get(5)?,
        sha256: row.get(6)?,
        created_ts: row.get(7)?,
        uploaded_ts: row.get(8)?,
        last_access_ts: row.get(9)?,
        authenticated: row.get(10)?,
    })
}

/// Inserts a row (uploaded or pending); `false` when the ID exists already.
pub fn insert(conn: &Connection, row: &MediaRow) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(&format!(
            "INSERT INTO media ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO NOTHING"
        ))?
        .execute(params![
            row.origin,
            row.media_id,
            row.uploader,
            row.content_type,
            row.filename,
            row.size,
            row.sha256,
            row.created_ts,
            row.uploaded_ts,
            row.last_access_ts,
            row.authenticated,
        ])?
        == 1)
}

pub fn get(conn: &Connection, origin: &str, media_id: &str) -> rusqlite::Result<Option<MediaRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM media WHERE origin = ?1 AND media_id = ?2"
    ))?
    .query_row([origin, media_id], from_row)
    .optional()
}

/// Gives a pending ID its content (`row`'s type, name, size, hash and upload time); `false` when
/// it has content already.
pub fn complete_pending(conn: &Connection, row: &MediaRow) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE media SET content_type = ?3, filename = ?4, size = ?5, sha256 = ?6, uploaded_ts = ?7
             WHERE origin = ?1 AND media_id = ?2 AND sha256 IS NULL",
        )?
        .execute(params![
            row.origin,
            row.media_id,
            row.content_type,
            row.filename,
            row.size,
            row.sha256,
            row.uploaded_ts
        ])?
        == 1)
}

/// How many IDs `uploader` created after `since` that still wait for their upload.
pub fn count_pending(conn: &Connection, uploader: &str, since: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM media WHERE uploader = ?1 AND sha256 IS NULL AND created_ts > ?2",
    )?
    .query_row(params![uploader, since], |row| row.get(0))
}

/// Records that the media was served now (for `media_retention`).
pub fn touch(conn: &Connection, origin: &str, media_id: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE media SET last_access_ts = ?3 WHERE origin = ?1 AND media_id = ?2",
    )?
    .execute(params![origin, media_id, now])?;
    Ok(())
}

/// Everything `uploader` uploaded or created, oldest first.
pub fn list_by_uploader(conn: &Connection, uploader: &str) -> rusqlite::Result<Vec<MediaRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM media WHERE uploader = ?1 ORDER BY created_ts, media_id"
    ))?;
    stmt.query_map([uploader], from_row)?.collect()
}

/// Deletes a row; returns it when it existed.
pub fn delete(
    conn: &Connection,
    origin: &str,
    media_id: &str,
) -> rusqlite::Result<Option<MediaRow>> {
    let row = get(conn, origin, media_id)?;
    if row.is_some() {
        conn.prepare_cached("DELETE FROM media WHERE origin = ?1 AND media_id = ?2")?
            .execute([origin, media_id])?;
    }
    Ok(row)
}

/// Whether any media ID, or a cached remote thumbnail, still points at this content.
pub fn content_in_use(conn: &Connection, sha256: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM media WHERE sha256 = ?1)
             OR EXISTS (SELECT 1 FROM remote_thumbnails WHERE sha256 = ?1)",
    )?
    .query_row([sha256], |row| row.get(0))
}

/// A thumbnail another server made of its media (table `remote_thumbnails`).
#[derive(Debug, Clone)]
pub struct RemoteThumbnail {
    pub origin: String,
    pub media_id: String,
    pub width: u32,
    pub height: u32,
    /// `crop` or `scale`.
    pub method: String,
    pub content_type: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub created_ts: i64,
    pub last_access_ts: i64,
}

const THUMBNAIL_COLUMNS: &str = "origin, media_id, width, height, method, content_type, size, \
                                 sha256, created_ts, last_access_ts";

fn thumbnail_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RemoteThumbnail> {
    Ok(RemoteThumbnail {
        origin: row.get(0)?,
        media_id: row.get(1)?,
        width: row.get(2)?,
        height: row.get(3)?,
        method: row.get(4)?,
        content_type: row.get(5)?,
        size: row.get(6)?,
        sha256: row.get(7)?,
        created_ts: row.get(8)?,
        last_access_ts: row.get(9)?,
    })
}

/// The cached remote thumbnail of this exact request, if any.
pub fn get_remote_thumbnail(
    conn: &Connection,
    origin: &str,
    media_id: &str,
    (width, height, method): (u32, u32, &str),
) -> rusqlite::Result<Option<RemoteThumbnail>> {
    conn.prepare_cached(&format!(
        "SELECT {THUMBNAIL_COLUMNS} FROM remote_thumbnails
         WHERE origin = ?1 AND media_id = ?2 AND width = ?3 AND height = ?4 AND method = ?5"
    ))?
    .query_row(
        params![origin, media_id, width, height, method],
        thumbnail_from_row,
    )
    .optional()
}

/// Stores a remote thumbnail, replacing one of the same request (whose content the caller
/// removes if unused): returns the replaced row's SHA-256.
pub fn put_remote_thumbnail(
    conn: &Connection,
    row: &RemoteThumbnail,
) -> rusqlite::Result<Option<String>> {
    let key = (row.width, row.height, row.method.as_str());
    let replaced = get_remote_thumbnail(conn, &row.origin, &row.media_id, key)?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO remote_thumbnails ({THUMBNAIL_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        row.origin,
        row.media_id,
        row.width,
        row.height,
        row.method,
        row.content_type,
        row.size,
        row.sha256,
        row.created_ts,
        row.last_access_ts,
    ])?;
    Ok(replaced.map(|r| r.sha256))
}

pub fn touch_remote_thumbnail(
    conn: &Connection,
    row: &RemoteThumbnail,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE remote_thumbnails SET last_access_ts = ?6
         WHERE origin = ?1 AND media_id = ?2 AND width = ?3 AND height = ?4 AND method = ?5",
    )?
    .execute(params![
        row.origin,
        row.media_id,
        row.width,
        row.height,
        row.method,
        now
    ])?;
    Ok(())
}

/// Deletes one remote thumbnail row.
pub fn delete_remote_thumbnail(conn: &Connection, row: &RemoteThumbnail) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM remote_thumbnails
         WHERE origin = ?1 AND media_id = ?2 AND width = ?3 AND height = ?4 AND method = ?5",
    )?
    .execute(params![
        row.origin,
        row.media_id,
        row.width,
        row.height,
        row.method
    ])?;
    Ok(())
}

/// Every cached remote thumbnail of one media ID.
pub fn remote_thumbnails_of(
    conn: &Connection,
    origin: &str,
    media_id: &str,
) -> rusqlite::Result<Vec<RemoteThumbnail>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {THUMBNAIL_COLUMNS} FROM remote_thumbnails WHERE origin = ?1 AND media_id = ?2"
    ))?;
    stmt.query_map([origin, media_id], thumbnail_from_row)?
        .collect()
}

/// Remote thumbnails last served before `cutoff`.
pub fn remote_thumbnails_unused_since(
    conn: &Connection,
    cutoff: i64,
) -> rusqlite::Result<Vec<RemoteThumbnail>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {THUMBNAIL_COLUMNS} FROM remote_thumbnails WHERE last_access_ts < ?1"
    ))?;
    stmt.query_map([cutoff], thumbnail_from_row)?.collect()
}

/// One cached copy of other servers' media: an original or a thumbnail.
pub enum CachedCopy {
    Original(MediaRow),
    Thumbnail(RemoteThumbnail),
}

impl CachedCopy {
    pub fn size(&self) -> i64 {
        match self {
            Self::Original(row) => row.size.unwrap_or(0),
            Self::Thumbnail(row) => row.size,
        }
    }
}

/// Media of other servers than `local_origin` last served (or fetched) before `cutoff`.
pub fn remote_unused_since(
    conn: &Connection,
    local_origin: &str,
    cutoff: i64,
) -> rusqlite::Result<Vec<MediaRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM media WHERE origin != ?1 AND coalesce(last_access_ts, created_ts) < ?2"
    ))?;
    stmt.query_map(params![local_origin, cutoff], from_row)?
        .collect()
}

/// The bytes the cached copies of other servers' media and their thumbnails take (by their
/// rows: content shared by several rows counts once per row).
pub fn remote_cached_size(conn: &Connection, local_origin: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT (SELECT coalesce(sum(size), 0) FROM media
                 WHERE origin != ?1 AND sha256 IS NOT NULL)
              + (SELECT coalesce(sum(size), 0) FROM remote_thumbnails)",
    )?
    .query_row([local_origin], |row| row.get(0))
}

/// Up to `limit` cached copies of other servers' media (originals and thumbnails), the least
/// recently used first.
pub fn remote_least_recently_used(
    conn: &Connection,
    local_origin: &str,
    limit: i64,
) -> rusqlite::Result<Vec<CachedCopy>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM media WHERE origin != ?1 AND sha256 IS NOT NULL
         ORDER BY coalesce(last_access_ts, created_ts), origin, media_id LIMIT ?2"
    ))?;
    let originals = stmt
        .query_map(params![local_origin, limit], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {THUMBNAIL_COLUMNS} FROM remote_thumbnails
         ORDER BY last_access_ts, origin, media_id LIMIT ?1"
    ))?;
    let thumbnails = stmt
        .query_map([limit], thumbnail_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let used = |copy: &CachedCopy| match copy {
        CachedCopy::Original(row) => row.last_access_ts.unwrap_or(row.created_ts),
        CachedCopy::Thumbnail(row) => row.last_access_ts,
    };
    let mut copies: Vec<CachedCopy> = originals
        .into_iter()
        .map(CachedCopy::Original)
        .chain(thumbnails.into_iter().map(CachedCopy::Thumbnail))
        .collect();
    copies.sort_by_key(used);
    copies.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(copies)
}

/// Local media (uploaded, not pending) last served, or else uploaded, before `cutoff`, except
/// what is in use as a picture: a user's avatar or a room's current avatar (Synapse keeps
/// profile pictures too).
pub fn local_unused_since(
    conn: &Connection,
    local_origin: &str,
    cutoff: i64,
) -> rusqlite::Result<Vec<MediaRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM media
         WHERE origin = ?1 AND sha256 IS NOT NULL
           AND coalesce(last_access_ts, uploaded_ts, created_ts) < ?2
           AND 'mxc://' || origin || '/' || media_id NOT IN (
               SELECT avatar_url FROM users WHERE avatar_url IS NOT NULL)
           AND 'mxc://' || origin || '/' || media_id NOT IN (
               SELECT json_extract(e.json, '$.content.url') FROM current_state s
               JOIN events e ON e.event_id = s.event_id
               WHERE s.type = 'm.room.avatar' AND s.state_key = ''
                 AND json_extract(e.json, '$.content.url') IS NOT NULL)"
    ))?;
    stmt.query_map(params![local_origin, cutoff], from_row)?
        .collect()
}
