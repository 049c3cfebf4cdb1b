//! The media repository: uploads (at once, or `/create` first and the content later), lookups
//! for downloads and thumbnails, deletion and the purge of cached remote media. Content lives on
//! disk once per SHA-256 (`store`); the rows naming it in SQLite (`storage::media`).
//!
//! A `media` row per media ID (`origin`, `media_id`, uploader, type, file name, size, `sha256`,
//! times, `authenticated`; migration `0006_media.sql`, settings in `config/media.rs`, CLI in
//! `cli/media.rs`). An upload's file is renamed to its content path (or dropped when that content
//! exists) inside the write transaction that inserts its row, and deletion removes a file in the
//! transaction that removes its last row: the single writer serialises the two, so an upload never
//! points at a file being deleted. `/create` inserts a row without content (at most
//! `max_pending_media_uploads` per user, expiring after `unused_expiration_time`); a download of it
//! waits on a `watch` channel bumped by each completed `PUT`, up to `timeout_ms` (at most 60 s).
//! Thumbnails run in `spawn_blocking`, at most one per core at a time. Retention
//! (`media_retention`: `local_media_lifetime`, `remote_media_lifetime`) runs hourly, `appliance
//! admin media purge-remote` by hand: for remote media, rows of other origins not served since the
//! cut-off go, with their files once unshared.
//!
//! Other servers' media is fetched on first request (`remote`: federation endpoint, legacy
//! fallback, redirects, one download per file however many ask) and cached in the same store.
//! A thumbnail of it is asked of its server while the original is not cached here (kept in
//! `remote_thumbnails`, migration `0013`); otherwise, or when that server cannot make one, it is
//! made here from the original.

pub mod preview;
pub mod remote;
pub mod store;
pub mod thumbnail;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use crate::shutdown::BackgroundTasks;
use bytes::Bytes;
use futures_util::Stream;
use http::StatusCode;
use rand::{RngExt, distr::Alphanumeric};
use ruma::{
    OwnedMxcUri, OwnedServerName, ServerName, UserId,
    api::error::{ErrorKind, LimitExceededErrorData, RetryAfter},
};
use tokio::sync::{Semaphore, watch};

use crate::{
    config::{
        Config,
        media::{MAX_THUMBNAIL_DIMENSION, ThumbnailMethod, ThumbnailSize},
    },
    error::{Error, Result},
    services::federation::client::FederationClient,
    storage::{Database, media as media_store, media::MediaRow, now_ms},
};
use store::MediaStore;
use thumbnail::ThumbnailError;

/// The longest a download may wait for the content of a `/create`d ID (Synapse's cap).
const MAX_WAIT_FOR_UPLOAD: Duration = Duration::from_secs(60);

/// Longest content type and file name kept, in bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const MAX_FILENAME_BYTES: usize = 255;

pub struct Media {
    db: Database,
    store: Arc<MediaStore>,
    server_name: OwnedServerName,
    max_upload_size: u64,
    max_image_pixels: u64,
    dynamic_thumbnails: bool,
    thumbnail_sizes: Vec<ThumbnailSize>,
    authenticated_uploads: bool,
    max_pending: u32,
    pending_lifetime: Duration,
    /// Bumped whenever a `/create`d ID gets its content, to wake downloads waiting for it.
    uploaded: watch::Sender<u64>,
    /// Image decoding takes memory (up to 4 bytes a pixel): one at a time per core.
    thumbnailing: Semaphore,
    /// Which cached thumbnail file answered a request, so that a repeated request is served
    /// without opening the original (whose size decides the choice) again.
    chosen: std::sync::Mutex<HashMap<ChoiceKey, String>>,
    /// `None` unless `url_preview_enabled`.
    previews: Option<preview::UrlPreviews>,
    /// Fetches and caches other servers' media.
    remote: Arc<remote::RemoteMedia>,
}

/// (content SHA-256, requested width, height, method).
type ChoiceKey = (String, u32, u32, ThumbnailMethod);

/// Remembered choices; the map is emptied when it grows past this (it only saves work).
const MAX_REMEMBERED_CHOICES: usize = 10_000;

/// Stored content ready to be served.
#[derive(Debug, Clone)]
pub struct Content {
    pub path: PathBuf,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The SHA-256 of the bytes (hex): a strong validator for `ETag`.
    pub sha256: String,
}

/// What a thumbnail request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

/// Which endpoint family asks: media marked `authenticated` is not served to the legacy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Authenticated,
    Legacy,
    Federation,
}

impl Media {
    /// `federation`: the client that fetches other servers' media.
    pub fn open(
        db: Database,
        config: &Config,
        federation: Arc<FederationClient>,
    ) -> anyhow::Result<Self> {
        let root = config.media_store_path();
        let store = MediaStore::open(&root)
            .map_err(|e| anyhow::anyhow!("cannot open the media store {}: {e}", root.display()))?;
        let store = Arc::new(store);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let server_name: OwnedServerName = config.server_name.as_str().try_into()?;
        let remote = Arc::new(remote::RemoteMedia::new(
            federation,
            db.clone(),
            store.clone(),
            config,
            server_name.clone(),
        ));
        Ok(Self {
            db,
            store,
            remote,
            server_name,
            max_upload_size: config.max_upload_size.0,
            max_image_pixels: config.max_image_pixels.0,
            dynamic_thumbnails: config.dynamic_thumbnails,
            thumbnail_sizes: config.thumbnail_sizes.clone(),
            authenticated_uploads: config.enable_authenticated_media,
            max_pending: config.max_pending_media_uploads,
            pending_lifetime: config.unused_expiration_time.0,
            uploaded: watch::channel(0).0,
            thumbnailing: Semaphore::new(cores),
            chosen: std::sync::Mutex::new(HashMap::new()),
            previews: preview::UrlPreviews::new(config)?,
        })
    }

    pub fn max_upload_size(&self) -> u64 {
        self.max_upload_size
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }

    /// `POST /upload`: stores the body and returns its new `mxc://` URI.
    pub async fn upload<S, E>(
        &self,
        uploader: &UserId,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<OwnedMxcUri>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let (content_type, filename) = check_metadata(content_type, filename)?;
        let received = self.store.receive(body, self.max_upload_size).await?;
        let media_id = new_media_id();
        let now = now_ms();
        let row = MediaRow {
            origin: self.server_name.to_string(),
            media_id: media_id.clone(),
            uploader: Some(uploader.to_string()),
            content_type,
            filename,
            size: Some(received.size as i64),
            sha256: Some(received.sha256.clone()),
            created_ts: now,
            uploaded_ts: Some(now),
            last_access_ts: None,
            authenticated: self.authenticated_uploads,
        };
        let store = self.store.clone();
        self.db
            .write(move |tx| {
                if !media_store::insert(tx, &row)? {
                    return Err(Error::internal("a new media ID collided"));
                }
                store.commit(received).map_err(store_error)
            })
            .await?;
        Ok(self.mxc(&media_id))
    }

    /// `POST /_matrix/media/v1/create`: reserves a media ID for a later upload; returns it with
    /// the time (ms) after which it expires unused.
    pub async fn create_pending(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
        let media_id = new_media_id();
        let now = now_ms();
        let lifetime = self.pending_lifetime.as_millis() as i64;
        let row = MediaRow {
            origin: self.server_name.to_string(),
            media_id: media_id.clone(),
            uploader: Some(uploader.to_string()),
            content_type: None,
            filename: None,
            size: None,
            sha256: None,
            created_ts: now,
            uploaded_ts: None,
            last_access_ts: None,
            authenticated: self.authenticated_uploads,
        };
        let (max_pending, uploader) = (i64::from(self.max_pending), uploader.to_string());
        self.db
            .write(move |tx| {
                if media_store::count_pending(tx, &uploader, now - lifetime)? >= max_pending {
                    let mut data = LimitExceededErrorData::new();
                    data.retry_after = Some(RetryAfter::Delay(Duration::from_secs(60)));
                    return Err(Error::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorKind::LimitExceeded(data),
                        "Too many media IDs waiting for their upload",
                    ));
                }
                media_store::insert(tx, &row)?;
                Ok(())
            })
            .await?;
        Ok((self.mxc(&media_id), now + lifetime))
    }

    /// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the content of a `/create`d ID.
    pub async fn upload_pending<S, E>(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let (content_type, filename) = check_metadata(content_type, filename)?;
        // Checked before the body is read, so a refused upload costs nothing…
        let row = self.pending_row(server_name, media_id).await?;
        check_pending(&row, uploader, self.pending_expired(&row))?;
        let received = self.store.receive(body, self.max_upload_size).await?;
        let (store, uploader) = (self.store.clone(), uploader.to_owned());
        let (origin, media_id) = (server_name.to_string(), media_id.to_owned());
        let lifetime = self.pending_lifetime.as_millis() as i64;
        // …and again in the transaction, in case two uploads raced.
        self.db
            .write(move |tx| {
                let row = media_store::get(tx, &origin, &media_id)?
                    .ok_or_else(|| Error::not_found("Unknown media ID"))?;
                check_pending(&row, &uploader, now_ms() > row.created_ts + lifetime)?;
                let completed = MediaRow {
                    content_type,
                    filename,
                    size: Some(received.size as i64),
                    sha256: Some(received.sha256.clone()),
                    uploaded_ts: Some(now_ms()),
                    ..row
                };
                media_store::complete_pending(tx, &completed)?;
                store.commit(received).map_err(store_error)
            })
            .await?;
        self.uploaded.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn pending_row(&self, server_name: &ServerName, media_id: &str) -> Result<MediaRow> {
        if server_name != self.server_name {
            return Err(Error::forbidden(
                "Media of other servers cannot be uploaded here",
            ));
        }
        let (origin, media_id) = (server_name.to_string(), media_id.to_owned());
        self.db
            .read(move |c| media_store::get(c, &origin, &media_id).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found("Unknown media ID"))
    }

    fn pending_expired(&self, row: &MediaRow) -> bool {
        row.sha256.is_none() && now_ms() > row.created_ts + self.pending_lifetime.as_millis() as i64
    }

    /// The content of `mxc://{server_name}/{media_id}`, waiting up to `timeout` for a `/create`d
    /// ID's upload.
    pub async fn content(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
        access: Access,
    ) -> Result<Content> {
        let row = self
            .row_with_content(server_name, media_id, timeout, access)
            .await?;
        let sha256 = row.sha256.unwrap_or_default();
        let path = self.store.content_path(&sha256);
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Error::internal(format!("media file {}: {e}", path.display())))?
            .len();
        Ok(Content {
            path,
            size,
            content_type: row.content_type,
            filename: row.filename,
            sha256,
        })
    }

    /// A thumbnail of an image, made on first request and then kept beside its content.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        timeout: Duration,
        access: Access,
    ) -> Result<Content> {
        let valid = (1..=MAX_THUMBNAIL_DIMENSION).contains(&request.width)
            && (1..=MAX_THUMBNAIL_DIMENSION).contains(&request.height);
        if !valid {
            return Err(Error::invalid_param(format!(
                "width and height must be 1 to {MAX_THUMBNAIL_DIMENSION}"
            )));
        }
        if server_name != self.server_name
            && let Some(content) = self
                .remote_thumbnail(server_name, media_id, request, timeout, access)
                .await?
        {
            return Ok(content);
        }
        let row = self
            .row_with_content(server_name, media_id, timeout, access)
            .await?;
        let Some((format, output)) = row.content_type.as_deref().and_then(thumbnail::formats)
        else {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Thumbnails are made of PNG, JPEG, GIF and WebP images only",
            ));
        };
        let sha256 = row.sha256.unwrap_or_default();
        let key = (
            sha256.clone(),
            request.width,
            request.height,
            request.method,
        );
        if let Some(content) = self.remembered_thumbnail(&key, output).await {
            return Ok(content);
        }
        let source_path = self.store.content_path(&sha256);
        let _permit = self
            .thumbnailing
            .acquire()
            .await
            .map_err(|_| Error::internal("thumbnailing stopped"))?;
        let (store, sizes) = (self.store.clone(), self.thumbnail_sizes.clone());
        let (dynamic, max_pixels) = (self.dynamic_thumbnails, self.max_image_pixels);
        let made = tokio::task::spawn_blocking(move || {
            let source = thumbnail::open(&source_path, format, max_pixels)?;
            let desired = (request.width, request.height);
            let target =
                thumbnail::choose(&sizes, dynamic, source.dimensions, desired, request.method)
                    .ok_or_else(|| {
                        ThumbnailError::Unreadable("no thumbnail size fits".to_owned())
                    })?;
            let name = target.file_name(output);
            let cached = store.thumbnail_path(&sha256, &name);
            if let Ok(metadata) = std::fs::metadata(&cached) {
                return Ok((cached, metadata.len(), name));
            }
            let bytes = thumbnail::render(source, target, output)?;
            let path = store
                .put_thumbnail(&sha256, &name, &bytes)
                .map_err(ThumbnailError::Store)?;
            Ok::<_, ThumbnailError>((path, bytes.len() as u64, name))
        })
        .await
        .map_err(|e| Error::internal(format!("thumbnailing panicked: {e}")))?;
        let (path, size, name) = made.map_err(|e| match e {
            ThumbnailError::TooManyPixels { .. } => {
                Error::too_large(format!("The image is too large to thumbnail: {e}"))
            }
            ThumbnailError::Unreadable(_) => {
                Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, e.to_string())
            }
            ThumbnailError::Store(e) => Error::io("cannot store a thumbnail", &e),
        })?;
        let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        if chosen.len() >= MAX_REMEMBERED_CHOICES {
            chosen.clear();
        }
        chosen.insert(key.clone(), name.clone());
        Ok(thumbnail_content(path, size, output, &key.0, &name))
    }

    /// A thumbnail of other servers' media made by its server: the cached one, or (when the
    /// original is not cached here) one asked for now. `None`: make it here from the original.
    async fn remote_thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        timeout: Duration,
        access: Access,
    ) -> Result<Option<Content>> {
        // The same rules as originals: never for other servers, and with authenticated media on
        // not fetched for the legacy endpoints.
        if access == Access::Federation || access == Access::Legacy && self.authenticated_uploads {
            return Ok(None);
        }
        let mut fetched = false;
        loop {
            let (origin, id) = (server_name.to_string(), media_id.to_owned());
            let key = (request.width, request.height, request.method.as_str());
            let (thumbnail, original) = self
                .db
                .read(move |c| {
                    let thumbnail = media_store::get_remote_thumbnail(c, &origin, &id, key)?;
                    let original = media_store::get(c, &origin, &id)?;
                    Ok::<_, rusqlite::Error>((thumbnail, original))
                })
                .await?;
            if let Some(thumbnail) = thumbnail {
                let path = self.store.content_path(&thumbnail.sha256);
                // Gone with a restored backup (which leaves caches out): asked for again.
                if let Ok(metadata) = tokio::fs::metadata(&path).await {
                    let row = thumbnail.clone();
                    self.db
                        .write(move |tx| {
                            media_store::touch_remote_thumbnail(tx, &row, now_ms())
                                .map_err(Error::from)
                        })
                        .await?;
                    return Ok(Some(Content {
                        path,
                        size: metadata.len(),
                        content_type: thumbnail.content_type,
                        filename: None,
                        sha256: thumbnail.sha256,
                    }));
                }
            }
            let original_cached = original.is_some_and(|row| row.sha256.is_some());
            if original_cached || fetched {
                return Ok(None);
            }
            if !self
                .remote
                .fetch_thumbnail(server_name, media_id, request, timeout)
                .await?
            {
                return Ok(None);
            }
            fetched = true;
        }
    }

    /// The cached thumbnail that answered the same request before, if its file is still there.
    async fn remembered_thumbnail(
        &self,
        key: &ChoiceKey,
        output: thumbnail::OutputType,
    ) -> Option<Content> {
        let name = self
            .chosen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        let path = self.store.thumbnail_path(&key.0, &name);
        let size = tokio::fs::metadata(&path).await.ok()?.len();
        Some(thumbnail_content(path, size, output, &key.0, &name))
    }

    async fn row_with_content(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
        access: Access,
    ) -> Result<MediaRow> {
        let is_local = server_name == self.server_name;
        if !is_local && access == Access::Federation {
            // Servers only serve their own media to each other.
            return Err(Error::not_found("Not found"));
        }
        let mut uploads = self.uploaded.subscribe();
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT_FOR_UPLOAD);
        let mut fetched = false;
        loop {
            let (origin, id) = (server_name.to_string(), media_id.to_owned());
            let row = self
                .db
                .read(move |c| media_store::get(c, &origin, &id).map_err(Error::from))
                .await?;
            let Some(row) = row else {
                // With authenticated media on, the legacy endpoints never fetch (Synapse).
                let may_fetch = !(is_local
                    || fetched
                    || access == Access::Legacy && self.authenticated_uploads);
                if !may_fetch {
                    return Err(Error::not_found("Not found"));
                }
                self.remote.fetch(server_name, media_id, timeout).await?;
                fetched = true;
                continue;
            };
            if access == Access::Legacy && row.authenticated {
                return Err(Error::not_found("Not found"));
            }
            if row.sha256.is_some() {
                if !is_local {
                    self.touch(&row).await?;
                }
                return Ok(row);
            }
            if self.pending_expired(&row) {
                return Err(Error::not_found("Not found"));
            }
            let waited = tokio::time::timeout_at(deadline, uploads.changed()).await;
            if waited.is_err() {
                return Err(Error::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
        }
    }

    /// Records that a remote file was served, for `remote_media_lifetime` and the cache cap,
    /// at most once a minute per file (as Synapse batches them): each record is a synced write,
    /// and a file served again and again waited for one each time.
    async fn touch(&self, row: &MediaRow) -> Result<()> {
        const GRANULARITY_MS: i64 = 60_000;
        if row
            .last_access_ts
            .is_some_and(|last| now_ms() - last < GRANULARITY_MS)
        {
            return Ok(());
        }
        let (origin, id) = (row.origin.clone(), row.media_id.clone());
        self.db
            .write(move |tx| media_store::touch(tx, &origin, &id, now_ms()).map_err(Error::from))
            .await
    }

    /// Every media ID the user uploaded or reserved, oldest first.
    pub async fn list(&self, uploader: &UserId) -> Result<Vec<MediaRow>> {
        let uploader = uploader.to_string();
        self.db
            .read(move |c| media_store::list_by_uploader(c, &uploader).map_err(Error::from))
            .await
    }

    /// Deletes a media ID; its file goes too once no other ID shares the content.
    pub async fn delete(&self, server_name: &ServerName, media_id: &str) -> Result<()> {
        let (origin, media_id) = (server_name.to_string(), media_id.to_owned());
        let store = self.store.clone();
        self.db
            .write(move |tx| {
                let thumbnails = media_store::remote_thumbnails_of(tx, &origin, &media_id)?;
                for thumbnail in &thumbnails {
                    media_store::delete_remote_thumbnail(tx, thumbnail)?;
                    remove_unused_content(tx, &store, Some(&thumbnail.sha256))?;
                }
                let Some(row) = media_store::delete(tx, &origin, &media_id)? else {
                    if thumbnails.is_empty() {
                        return Err(Error::not_found(format!(
                            "mxc://{origin}/{media_id} does not exist"
                        )));
                    }
                    return Ok(());
                };
                remove_unused_content(tx, &store, row.sha256.as_deref())
            })
            .await
    }

    /// Deletes the cached copies of other servers' media, and the thumbnails they made, not
    /// served since `older_than` ago; returns how many originals.
    pub async fn purge_remote(&self, older_than: Duration) -> Result<usize> {
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let store = self.store.clone();
        self.db
            .write(move |tx| {
                for thumbnail in media_store::remote_thumbnails_unused_since(tx, cutoff)? {
                    media_store::delete_remote_thumbnail(tx, &thumbnail)?;
                    remove_unused_content(tx, &store, Some(&thumbnail.sha256))?;
                }
                Ok::<_, Error>(())
            })
            .await?;
        self.purge_unused(older_than, media_store::remote_unused_since)
            .await
    }

    /// Deletes this server's media not served since `older_than` ago (or, never served, not
    /// uploaded since), except users' and rooms' avatars; returns how many.
    pub async fn purge_local(&self, older_than: Duration) -> Result<usize> {
        self.purge_unused(older_than, media_store::local_unused_since)
            .await
    }

    /// Deletes the media IDs `unused` picks (given this server's name and the cutoff time),
    /// and each content file no other ID shares; returns how many IDs.
    async fn purge_unused(
        &self,
        older_than: Duration,
        unused: fn(&rusqlite::Connection, &str, i64) -> rusqlite::Result<Vec<MediaRow>>,
    ) -> Result<usize> {
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let local = self.server_name.to_string();
        let store = self.store.clone();
        self.db
            .write(move |tx| {
                let rows = unused(tx, &local, cutoff)?;
                for row in &rows {
                    media_store::delete(tx, &row.origin, &row.media_id)?;
                    remove_unused_content(tx, &store, row.sha256.as_deref())?;
                }
                Ok(rows.len())
            })
            .await
    }
}

/// How often `media_retention` runs (Synapse: daily).
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs `media_retention` hourly: `local_media_lifetime` and `remote_media_lifetime`.
pub fn spawn_retention(services: &Arc<super::Services>, tasks: &BackgroundTasks) {
    let retention = services.config.media_retention.clone();
    if retention.local_media_lifetime.is_none() && retention.remote_media_lifetime.is_none() {
        return;
    }
    let services = services.clone();
    tasks.spawn(|shutdown| async move {
        let mut every = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.stopping() => break,
            }
            if let Some(lifetime) = retention.local_media_lifetime {
                match services.media.purge_local(lifetime.0).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(purged = n, "deleted local media unused for {lifetime}")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot purge old local media"),
                }
            }
            if let Some(lifetime) = retention.remote_media_lifetime {
                match services.media.purge_remote(lifetime.0).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "deleted unused cached remote media"),
                    Err(e) => tracing::warn!(error = %e, "cannot purge cached remote media"),
                }
            }
        }
    });
}

/// Deletes the file of a content no media ID points at any more. Runs inside the write
/// transaction that removed the last row, so no upload of the same bytes can slip in between.
fn remove_unused_content(
    tx: &rusqlite::Transaction<'_>,
    store: &MediaStore,
    sha256: Option<&str>,
) -> Result<()> {
    match sha256 {
        Some(sha256) if !media_store::content_in_use(tx, sha256)? => {
            store.remove_content(sha256).map_err(store_error)
        }
        _ => Ok(()),
    }
}

fn check_pending(row: &MediaRow, uploader: &UserId, expired: bool) -> Result<()> {
    if row.uploader.as_deref() != Some(uploader.as_str()) {
        return Err(Error::forbidden(
            "This media ID was created by another user",
        ));
    }
    if row.sha256.is_some() {
        return Err(Error::new(
            StatusCode::CONFLICT,
            ErrorKind::CannotOverwriteMedia,
            "This media has been uploaded already",
        ));
    }
    if expired {
        return Err(Error::not_found("This media ID has expired"));
    }
    Ok(())
}

fn check_metadata(
    content_type: Option<String>,
    filename: Option<String>,
) -> Result<(Option<String>, Option<String>)> {
    if content_type
        .as_ref()
        .is_some_and(|t| t.len() > MAX_CONTENT_TYPE_BYTES)
    {
        return Err(Error::invalid_param("The content type is too long"));
    }
    if let Some(name) = &filename
        && (name.len() > MAX_FILENAME_BYTES || name.chars().any(char::is_control))
    {
        return Err(Error::invalid_param(
            "The file name must be at most 255 bytes without control characters",
        ));
    }
    Ok((
        content_type.filter(|t| !t.is_empty()),
        filename.filter(|n| !n.is_empty()),
    ))
}

/// 24 random letters and digits, as Synapse's media IDs.
fn new_media_id() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn thumbnail_content(
    path: PathBuf,
    size: u64,
    output: thumbnail::OutputType,
    sha256: &str,
    name: &str,
) -> Content {
    Content {
        path,
        size,
        content_type: Some(output.content_type().to_owned()),
        filename: None,
        // The ETag: the thumbnail follows from the content and its name.
        sha256: format!("{sha256}-{name}"),
    }
}

fn store_error(e: std::io::Error) -> Error {
    Error::io("media store", &e)
}
