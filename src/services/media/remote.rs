//! Other servers' media: fetched on first request, then kept in the media store like local media
//! (a `media` row with the remote `origin` and no uploader, its bytes by SHA-256).
//!
//! A download asks the authenticated federation endpoint of Matrix 1.11
//! (`/_matrix/federation/v1/media/download/{mediaId}`, X-Matrix-signed), whose `multipart/mixed`
//! answer is read as it arrives (multer): the JSON metadata part, then either the bytes, streamed
//! to disk, or a `Location` to fetch them from. A server that does not know that endpoint (`404`
//! or `405` without JSON or with `M_UNRECOGNIZED`, or `400 M_UNRECOGNIZED`: Synapse's test) is
//! asked the legacy `/_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false`.
//! Redirects (`Location`, `3xx`) are followed up to [`MAX_REDIRECTS`] times, `https` only, each
//! target checked against the IP policy of outbound federation (`ip_range_blacklist` /
//! `ip_range_whitelist`) by the federation client, which connects to the checked address.
//!
//! Thumbnails of media not cached here are asked of its server the same way (federation
//! `/thumbnail`, legacy `/_matrix/media/v3/thumbnail` fallback) and cached in
//! `remote_thumbnails`; a server that answers without one makes `Media` fetch the original.
//!
//! Limits: the file may be at most `max_upload_size`, one download (redirects and fallback
//! included) at most `federation.client_timeout`; failures answer as Synapse's do: the remote's
//! `404` as `404 M_NOT_FOUND`, too large `502 M_TOO_LARGE`, anything else `502`. Concurrent
//! requests for one `(server, mediaId)` share one download (a task in `in_flight`, awaited by
//! all). After each download the cache (originals and thumbnails) is cut back to
//! `max_remote_media_cache_size`, least recently used first (never the file just fetched);
//! `media_retention.remote_media_lifetime` purges by age (`Media::purge_remote`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{
    FutureExt, StreamExt,
    future::{BoxFuture, Shared},
};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        error::ErrorKind,
        federation::authenticated_media::{
            ContentMetadata, get_content::v1 as get_content,
            get_content_thumbnail::v1 as get_thumbnail,
        },
    },
    http_headers::ContentDisposition,
};
use url::Url;

use super::{
    ThumbnailRequest,
    store::{MediaStore, Received},
};
use crate::{
    config::media::ThumbnailMethod,
    error::{Error, Result},
    services::{
        federation::client::{FederationClient, FederationError},
        media::preview::fetch::read_at_most,
    },
    storage::{
        Database, media as media_store,
        media::{CachedCopy, MediaRow, RemoteThumbnail},
        now_ms,
    },
};

/// Redirects followed for one download (as the URL previews' fetcher).
pub const MAX_REDIRECTS: usize = 5;

/// The most read of an error answer (for its errcode) or of the JSON metadata part.
const MAX_SMALL_BODY: usize = 64 * 1024;

/// Room for the multipart framing (boundaries, part headers) beyond the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Cached copies removed per query while cutting the cache back to its cap.
const EVICTION_BATCH: i64 = 256;

/// A download's outcome, shared by every request waiting for it.
/// `Ok(false)`: the server answered, but without a thumbnail.
type Download = Shared<BoxFuture<'static, Result<bool, SharedError>>>;

/// An [`Error`] that many waiters can each turn back into one.
#[derive(Clone, Debug)]
struct SharedError(Arc<Error>);

impl From<SharedError> for Error {
    fn from(shared: SharedError) -> Self {
        match &*shared.0 {
            Error::Matrix {
                status,
                kind,
                message,
            } => Error::new(*status, kind.clone(), message.clone()),
            other => Error::internal(format!("{other:?}")),
        }
    }
}

/// Fetches other servers' media and thumbnails into the media store, one download per file.
pub struct RemoteMedia {
    client: Arc<FederationClient>,
    db: Database,
    store: Arc<MediaStore>,
    local: OwnedServerName,
    /// `max_upload_size`: the largest file fetched.
    max_size: u64,
    /// `max_remote_media_cache_size`.
    cache_cap: u64,
    /// `federation.client_timeout`: the longest one download may take.
    timeout: Duration,
    /// `enable_authenticated_media` when fetched: the legacy endpoints do not serve it then.
    authenticated: bool,
    in_flight: Mutex<HashMap<Key, Download>>,
}

/// What is being fetched: an original, or one thumbnail size of it.
type Key = (OwnedServerName, String, Option<ThumbnailRequest>);

/// A file received from another server, not yet in the store.
struct Fetched {
    received: Received,
    content_type: Option<String>,
    filename: Option<String>,
}

impl RemoteMedia {
    /// `local`: this server's name (its media is never fetched, nor counted in the cache).
    pub fn new(
        client: Arc<FederationClient>,
        db: Database,
        store: Arc<MediaStore>,
        config: &crate::config::Config,
        local: OwnedServerName,
    ) -> Self {
        Self {
            client,
            db,
            store,
            local,
            max_size: config.max_upload_size.0,
            cache_cap: config.max_remote_media_cache_size.0,
            timeout: config.federation.client_timeout.0,
            authenticated: config.enable_authenticated_media,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches `mxc://{origin}/{media_id}` into the cache, or waits for the download of it
    /// already under way. `wait`: how long the remote server may wait for a `/create`d upload.
    pub async fn fetch(
        self: &Arc<Self>,
        origin: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<()> {
        self.shared((origin.to_owned(), media_id.to_owned(), None), wait)
            .await
            .map(drop)
    }

    /// Asks the media's server for a thumbnail of this size and caches it (`remote_thumbnails`),
    /// or waits for the same request under way: `false` when the server answered without one
    /// (then the original is fetched and thumbnailed here); an error when it did not answer in
    /// time.
    pub async fn fetch_thumbnail(
        self: &Arc<Self>,
        origin: &ServerName,
        media_id: &str,
        size: ThumbnailRequest,
        wait: Duration,
    ) -> Result<bool> {
        self.shared((origin.to_owned(), media_id.to_owned(), Some(size)), wait)
            .await
    }

    /// Runs the download of `key` once however many ask for it at the same time.
    async fn shared(self: &Arc<Self>, key: Key, wait: Duration) -> Result<bool> {
        let download = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight
                .entry(key.clone())
                .or_insert_with(|| {
                    // A task of its own: a client that gives up does not cancel the download
                    // others wait for, and the cache is filled for the next request anyway.
                    let this = self.clone();
                    let task = tokio::spawn(async move {
                        let (origin, media_id, size) = &key;
                        let result = match size {
                            None => this.download(origin, media_id, wait).await.map(|()| true),
                            Some(size) => {
                                this.download_thumbnail(origin, media_id, *size, wait).await
                            }
                        };
                        this.in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        result.map_err(|e| SharedError(Arc::new(e)))
                    });
                    async move {
                        task.await.unwrap_or_else(|e| {
                            Err(SharedError(Arc::new(Error::internal(format!(
                                "remote media download: {e}"
                            )))))
                        })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        download.await.map_err(Error::from)
    }

    /// One thumbnail from the media's server into the cache; `false` when it answered without.
    async fn download_thumbnail(
        &self,
        origin: &ServerName,
        media_id: &str,
        size: ThumbnailRequest,
        wait: Duration,
    ) -> Result<bool> {
        let key = (size.width, size.height, size.method.as_str());
        let (o, id) = (origin.to_string(), media_id.to_owned());
        let cached = self
            .db
            .read(move |c| media_store::get_remote_thumbnail(c, &o, &id, key).map_err(Error::from))
            .await?
            .is_some();
        if cached {
            return Ok(true);
        }
        let timeout = self.timeout;
        let fetching = self.fetch_thumbnail_file(origin, media_id, size, wait);
        let fetched = match tokio::time::timeout(timeout, fetching).await {
            Ok(Ok(fetched)) => fetched,
            // Whatever it answered instead (an error, a broken answer), the original may do.
            Ok(Err(e)) => {
                tracing::info!(%origin, media_id, "no thumbnail from the server: {e:?}");
                return Ok(false);
            }
            // Not waited for twice.
            Err(_) => {
                return Err(unreachable(format!(
                    "no complete thumbnail within {timeout:?} (federation.client_timeout)"
                )));
            }
        };
        let now = now_ms();
        let row = RemoteThumbnail {
            origin: origin.to_string(),
            media_id: media_id.to_owned(),
            width: size.width,
            height: size.height,
            method: size.method.as_str().to_owned(),
            content_type: fetched.content_type,
            size: fetched.received.size as i64,
            sha256: fetched.received.sha256.clone(),
            created_ts: now,
            last_access_ts: now,
        };
        let (store, local, cap) = (self.store.clone(), self.local.to_string(), self.cache_cap);
        let received = fetched.received;
        self.db
            .write(move |tx| {
                let replaced = media_store::put_remote_thumbnail(tx, &row)?;
                store.commit(received).map_err(super::store_error)?;
                if replaced.as_deref() != Some(row.sha256.as_str()) {
                    super::remove_unused_content(tx, &store, replaced.as_deref())?;
                }
                let keep = |copy: &CachedCopy| {
                    matches!(copy, CachedCopy::Thumbnail(t) if t.origin == row.origin
                        && t.media_id == row.media_id && t.width == row.width
                        && t.height == row.height && t.method == row.method)
                };
                evict(tx, &store, &local, cap, &keep)
            })
            .await?;
        Ok(true)
    }

    /// A thumbnail from the federation endpoint, or from the legacy one for a server without it.
    async fn fetch_thumbnail_file(
        &self,
        origin: &ServerName,
        media_id: &str,
        size: ThumbnailRequest,
        wait: Duration,
    ) -> Result<Fetched> {
        let mut request = get_thumbnail::Request::new(
            media_id.to_owned(),
            ruma::UInt::from(size.width),
            ruma::UInt::from(size.height),
        );
        request.method = Some(match size.method {
            ThumbnailMethod::Crop => ruma::media::Method::Crop,
            ThumbnailMethod::Scale => ruma::media::Method::Scale,
        });
        request.timeout_ms = wait;
        let response = self
            .client
            .send_streamed(origin, request)
            .await
            .map_err(federation_error)?;
        let legacy = format!(
            "/_matrix/media/v3/thumbnail/{}/{}?width={}&height={}&method={}&allow_remote=false\
             &timeout_ms={}",
            encode(origin.as_str()),
            encode(media_id),
            size.width,
            size.height,
            size.method.as_str(),
            wait.as_millis()
        );
        self.multipart_or_legacy(origin, response, &legacy).await
    }

    /// One download into the cache, unless a download that just ended cached it already.
    async fn download(&self, origin: &ServerName, media_id: &str, wait: Duration) -> Result<()> {
        let (o, id) = (origin.to_string(), media_id.to_owned());
        let cached = self
            .db
            .read(move |c| media_store::get(c, &o, &id).map_err(Error::from))
            .await?
            .is_some_and(|row| row.sha256.is_some());
        if cached {
            return Ok(());
        }
        let timeout = self.timeout;
        let fetched = tokio::time::timeout(timeout, self.fetch_file(origin, media_id, wait))
            .await
            .unwrap_or_else(|_| {
                Err(unreachable(format!(
                    "no complete answer within {timeout:?} (federation.client_timeout)"
                )))
            })
            .inspect_err(|e| {
                tracing::info!(%origin, media_id, "cannot fetch remote media: {e:?}");
            })?;
        let now = now_ms();
        let row = MediaRow {
            origin: origin.to_string(),
            media_id: media_id.to_owned(),
            uploader: None,
            content_type: fetched.content_type,
            filename: fetched.filename,
            size: Some(fetched.received.size as i64),
            sha256: Some(fetched.received.sha256.clone()),
            created_ts: now,
            uploaded_ts: Some(now),
            last_access_ts: Some(now),
            authenticated: self.authenticated,
        };
        let (store, local, cap) = (self.store.clone(), self.local.to_string(), self.cache_cap);
        let received = fetched.received;
        let evicted = self
            .db
            .write(move |tx| {
                if media_store::insert(tx, &row)? {
                    store.commit(received).map_err(super::store_error)?;
                }
                let keep = |copy: &CachedCopy| {
                    matches!(copy, CachedCopy::Original(o)
                        if o.origin == row.origin && o.media_id == row.media_id)
                };
                evict(tx, &store, &local, cap, &keep)
            })
            .await?;
        if evicted > 0 {
            tracing::info!(
                evicted,
                "remote media cache over max_remote_media_cache_size: least recently used removed"
            );
        }
        Ok(())
    }

    /// The file from the federation endpoint, or from the legacy one for a server without it.
    async fn fetch_file(
        &self,
        origin: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<Fetched> {
        let mut request = get_content::Request::new(media_id.to_owned());
        request.timeout_ms = wait;
        let response = self
            .client
            .send_streamed(origin, request)
            .await
            .map_err(federation_error)?;
        let legacy = format!(
            "/_matrix/media/v3/download/{}/{}?allow_remote=false&allow_redirect=true&timeout_ms={}",
            encode(origin.as_str()),
            encode(media_id),
            wait.as_millis()
        );
        self.multipart_or_legacy(origin, response, &legacy).await
    }

    /// The federation endpoint's answer read, or the `legacy` path (and query) asked instead when
    /// the server does not know the endpoint.
    async fn multipart_or_legacy(
        &self,
        origin: &ServerName,
        response: http::Response<Incoming>,
        legacy: &str,
    ) -> Result<Fetched> {
        if response.status().is_success() {
            return self.read_multipart_answer(response).await;
        }
        let status = response.status();
        let body = read_at_most(response.into_body(), MAX_SMALL_BODY)
            .await
            .map(|(body, _)| body)
            .unwrap_or_default();
        if !is_unknown_endpoint(status, &body) {
            return Err(status_error(status, &body));
        }
        tracing::debug!(%origin, "no federation media endpoint: the legacy one instead");
        let response = self
            .client
            .get_streamed(origin, legacy)
            .await
            .map_err(federation_error)?;
        let base = Url::parse(&format!("https://{origin}{legacy}"))
            .map_err(|e| unreachable(format!("bad media URL: {e}")))?;
        self.plain(response, base, 0).await
    }

    /// The federation endpoint's `multipart/mixed` answer: metadata, then the file or where it is.
    async fn read_multipart_answer(&self, response: http::Response<Incoming>) -> Result<Fetched> {
        let (parts, body) = response.into_parts();
        let body = body.into_data_stream();
        match read_multipart(&parts.headers, body, &self.store, self.max_size).await? {
            Part::File(fetched) => Ok(fetched),
            Part::Location(url) => {
                let response = self
                    .client
                    .get_url_streamed(&url)
                    .await
                    .map_err(federation_error)?;
                self.plain(response, url, 1).await
            }
        }
    }

    /// A plain answer with the file as its body (the legacy endpoint, a redirect's target),
    /// following `3xx` redirects; `hops`: redirects followed so far.
    async fn plain(
        &self,
        mut response: http::Response<Incoming>,
        mut url: Url,
        mut hops: usize,
    ) -> Result<Fetched> {
        loop {
            let status = response.status();
            if status.is_redirection() {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(unreachable(format!("more than {MAX_REDIRECTS} redirects")));
                }
                url = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| bad_answer("a redirect without a valid Location"))?;
                response = self
                    .client
                    .get_url_streamed(&url)
                    .await
                    .map_err(federation_error)?;
                continue;
            }
            if !status.is_success() {
                let body = read_at_most(response.into_body(), MAX_SMALL_BODY)
                    .await
                    .map(|(body, _)| body)
                    .unwrap_or_default();
                return Err(status_error(status, &body));
            }
            check_length(response.headers(), self.max_size)?;
            let (content_type, filename) = file_metadata(response.headers());
            let body = response.into_body().into_data_stream();
            let received = receive(&self.store, body, self.max_size).await?;
            return Ok(Fetched {
                received,
                content_type,
                filename,
            });
        }
    }
}

/// The second part of a federation media answer.
enum Part {
    File(Fetched),
    Location(Url),
}

/// Reads a `multipart/mixed` media answer as it arrives: the JSON metadata part (ruma's
/// `ContentMetadata`), then the file, streamed into the store's `tmp/`, or its `Location`.
async fn read_multipart<S, E>(
    headers: &HeaderMap,
    body: S,
    store: &MediaStore,
    max_size: u64,
) -> Result<Part>
where
    S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let boundary = multipart_boundary(headers)?;
    check_length(headers, max_size)?;
    // The whole answer is counted here, so that part headers without end cannot pile up either;
    // past the cap the stream fails and the flag tells why.
    let over = Arc::new(AtomicBool::new(false));
    let cap = max_size + MULTIPART_OVERHEAD;
    let mut total = 0u64;
    let flag = over.clone();
    let body = body.map(move |chunk| {
        let chunk = chunk.map_err(Into::into)?;
        total += chunk.len() as u64;
        if total > cap {
            flag.store(true, Ordering::Relaxed);
            return Err::<_, Box<dyn std::error::Error + Send + Sync>>(
                "the answer is larger than max_upload_size".into(),
            );
        }
        Ok(chunk)
    });
    let fail = |e: &dyn std::fmt::Display| {
        if over.load(Ordering::Relaxed) {
            too_large(max_size)
        } else {
            bad_answer(e)
        }
    };
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut metadata = multipart
        .next_field()
        .await
        .map_err(|e| fail(&e))?
        .ok_or_else(|| bad_answer("no metadata part"))?;
    let mut json = Vec::new();
    while let Some(chunk) = metadata.chunk().await.map_err(|e| fail(&e))? {
        if json.len() + chunk.len() > MAX_SMALL_BODY {
            return Err(bad_answer("the metadata part is too long"));
        }
        json.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<ContentMetadata>(&json).map_err(bad_answer)?;
    drop(metadata);
    let file = multipart
        .next_field()
        .await
        .map_err(|e| fail(&e))?
        .ok_or_else(|| bad_answer("no file part"))?;
    if let Some(location) = file.headers().get(header::LOCATION) {
        return location
            .to_str()
            .ok()
            .and_then(|l| Url::parse(l).ok())
            .map(Part::Location)
            .ok_or_else(|| bad_answer("the Location is not a URL"));
    }
    let (content_type, filename) = file_metadata(file.headers());
    let received = receive(store, file, max_size).await.map_err(|e| {
        if over.load(Ordering::Relaxed) {
            too_large(max_size)
        } else {
            e
        }
    })?;
    Ok(Part::File(Fetched {
        received,
        content_type,
        filename,
    }))
}

/// A declared length past the limit is refused before anything is read.
fn check_length(headers: &HeaderMap, max_size: u64) -> Result<()> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(length) if length > max_size + MULTIPART_OVERHEAD => Err(too_large(max_size)),
        _ => Ok(()),
    }
}

/// Streams the file into the store's `tmp/`, cut off past `max_size` (`max_upload_size`).
async fn receive<S, E>(store: &MediaStore, body: S, max_size: u64) -> Result<Received>
where
    S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>>,
    E: std::error::Error + 'static,
{
    store
        .receive(Box::pin(body), max_size)
        .await
        .map_err(|e| match e {
            Error::Matrix {
                kind: ErrorKind::TooLarge,
                ..
            } => too_large(max_size),
            // The body stopped or broke off: the remote's fault, not the client's.
            Error::Matrix { status, .. } if status.is_client_error() => {
                unreachable(format!("the file broke off: {e:?}"))
            }
            other => other,
        })
}

/// Cuts the cached remote media and thumbnails back to `cap` bytes, least recently used first,
/// never what `keep` picks (the copy just fetched); returns how many copies went.
fn evict(
    tx: &rusqlite::Transaction<'_>,
    store: &MediaStore,
    local: &str,
    cap: u64,
    keep: &dyn Fn(&CachedCopy) -> bool,
) -> Result<usize> {
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let mut total = media_store::remote_cached_size(tx, local)?;
    let mut evicted = 0;
    while total > cap {
        let copies = media_store::remote_least_recently_used(tx, local, EVICTION_BATCH)?;
        let mut removed_any = false;
        for copy in copies {
            if total <= cap {
                break;
            }
            if keep(&copy) {
                continue;
            }
            let sha256 = match &copy {
                CachedCopy::Original(row) => {
                    media_store::delete(tx, &row.origin, &row.media_id)?;
                    row.sha256.clone()
                }
                CachedCopy::Thumbnail(row) => {
                    media_store::delete_remote_thumbnail(tx, row)?;
                    Some(row.sha256.clone())
                }
            };
            super::remove_unused_content(tx, store, sha256.as_deref())?;
            total -= copy.size();
            evicted += 1;
            removed_any = true;
        }
        if !removed_any {
            break;
        }
    }
    Ok(evicted)
}

/// The boundary of a `multipart/mixed` answer.
fn multipart_boundary(headers: &HeaderMap) -> Result<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .ok_or_else(|| bad_answer("no Content-Type"))?;
    if content_type.essence_str() != "multipart/mixed" {
        return Err(bad_answer(format!(
            "{content_type} instead of multipart/mixed"
        )));
    }
    content_type
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| bad_answer("multipart/mixed without a boundary"))
}

/// The file's type and name, from its headers (`Content-Disposition` parsed by ruma).
fn file_metadata(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 255)
        .map(str::to_owned);
    let filename = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| ContentDisposition::try_from(v.as_bytes()).ok())
        .and_then(|d| d.filename)
        .filter(|name| name.len() <= 255 && !name.chars().any(char::is_control));
    (content_type, filename)
}

/// Synapse's test for a server that lacks an endpoint (`is_unknown_endpoint`): `404`/`405`
/// with no JSON or with `M_UNRECOGNIZED`, or `400 M_UNRECOGNIZED` (older Synapses).
fn is_unknown_endpoint(status: StatusCode, body: &[u8]) -> bool {
    let unrecognized = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|json| json["errcode"] == "M_UNRECOGNIZED")
    };
    match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            body.is_empty() || !body.starts_with(b"{") || unrecognized()
        }
        StatusCode::BAD_REQUEST => unrecognized(),
        _ => false,
    }
}

/// The remote's error answer as this server's: its `404` as `404 M_NOT_FOUND`, others `502`.
fn status_error(status: StatusCode, body: &[u8]) -> Error {
    if status == StatusCode::NOT_FOUND {
        return Error::not_found("The remote server has no such media");
    }
    let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    unreachable(format!("the remote server answered {status}: {detail}"))
}

fn federation_error(error: FederationError) -> Error {
    unreachable(error.to_string())
}

/// `502`, as Synapse's "Failed to fetch remote media"; the reason goes to the log.
fn unreachable(reason: String) -> Error {
    tracing::info!("remote media: {reason}");
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        "Failed to fetch remote media",
    )
}

fn bad_answer(reason: impl std::fmt::Display) -> Error {
    unreachable(format!("bad answer: {reason}"))
}

/// `502 M_TOO_LARGE`, as Synapse answers for a remote file past `max_upload_size`.
fn too_large(max: u64) -> Error {
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::TooLarge,
        format!("Requested file is too large > {max} bytes"),
    )
}

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_endpoints_are_told_from_missing_media() {
        let unrecognized = br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#;
        let not_found = br#"{"errcode":"M_NOT_FOUND","error":"Not found"}"#;
        assert!(is_unknown_endpoint(StatusCode::NOT_FOUND, unrecognized));
        assert!(is_unknown_endpoint(StatusCode::NOT_FOUND, b""));
        assert!(is_unknown_endpoint(StatusCode::NOT_FOUND, b"<html>"));
        assert!(is_unknown_endpoint(StatusCode::METHOD_NOT_ALLOWED, b""));
        assert!(is_unknown_endpoint(StatusCode::BAD_REQUEST, unrecognized));
        assert!(!is_unknown_endpoint(StatusCode::NOT_FOUND, not_found));
        assert!(!is_unknown_endpoint(StatusCode::BAD_REQUEST, b""));
        assert!(!is_unknown_endpoint(StatusCode::BAD_GATEWAY, unrecognized));
    }

    #[test]
    fn only_multipart_mixed_with_a_boundary_is_read() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(header::CONTENT_TYPE, value.parse().unwrap());
            map
        };
        assert_eq!(
            multipart_boundary(&headers("multipart/mixed; boundary=abc")).unwrap(),
            "abc"
        );
        assert!(multipart_boundary(&headers("multipart/mixed")).is_err());
        assert!(multipart_boundary(&headers("image/png")).is_err());
        assert!(multipart_boundary(&HeaderMap::new()).is_err());
    }

    /// ruma's own `multipart/mixed` answer, cut into small pieces so that boundaries straddle
    /// chunks.
    fn ruma_answer(
        content: ruma::api::federation::authenticated_media::FileOrLocation,
    ) -> (HeaderMap, Vec<bytes::Bytes>) {
        use ruma::api::OutgoingResponseExt;
        let response = get_content::Response::new(ContentMetadata::new(), content)
            .try_into_http_response::<Vec<u8>>()
            .unwrap();
        let (parts, body) = response.into_parts();
        let chunks = body.chunks(7).map(bytes::Bytes::copy_from_slice).collect();
        (parts.headers, chunks)
    }

    fn stream(
        chunks: Vec<bytes::Bytes>,
    ) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> {
        futures_util::stream::iter(chunks.into_iter().map(Ok))
    }

    #[tokio::test]
    async fn multipart_answers_are_streamed_into_the_store() {
        use ruma::{
            api::federation::authenticated_media::{Content, FileOrLocation},
            http_headers::ContentDispositionType,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let disposition = ContentDisposition::new(ContentDispositionType::Inline)
            .with_filename(Some("café.png".to_owned()));
        let file = FileOrLocation::File(Content::new(
            bytes.clone(),
            "image/png".to_owned(),
            disposition,
        ));
        let (headers, chunks) = ruma_answer(file.clone());
        let Part::File(fetched) = read_multipart(&headers, stream(chunks), &store, 10_000)
            .await
            .unwrap()
        else {
            panic!("a file was sent");
        };
        assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
        assert_eq!(fetched.filename.as_deref(), Some("café.png"));
        assert_eq!(fetched.received.size, bytes.len() as u64);
        let sha256 = fetched.received.sha256.clone();
        store.commit(fetched.received).unwrap();
        assert_eq!(std::fs::read(store.content_path(&sha256)).unwrap(), bytes);

        // Past the limit: 502 M_TOO_LARGE, nothing left in tmp/.
        let (headers, chunks) = ruma_answer(file.clone());
        let error = read_multipart(&headers, stream(chunks), &store, 4000)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, Error::Matrix { status, kind: ErrorKind::TooLarge, .. }
                if *status == StatusCode::BAD_GATEWAY),
            "{error:?}"
        );
        // Cut short: 502, not a truncated file.
        let (headers, mut chunks) = ruma_answer(file);
        chunks.truncate(chunks.len() / 2);
        let error = read_multipart(&headers, stream(chunks), &store, 10_000)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, Error::Matrix { status, .. } if *status == StatusCode::BAD_GATEWAY),
            "{error:?}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        // A redirect.
        let location = "https://cdn.example.org/media/abc?sig=1".to_owned();
        let (headers, chunks) = ruma_answer(FileOrLocation::Location(location.clone()));
        let Part::Location(url) = read_multipart(&headers, stream(chunks), &store, 10_000)
            .await
            .unwrap()
        else {
            panic!("a Location was sent");
        };
        assert_eq!(url.as_str(), location);
    }

    /// Originals and thumbnails of other servers' media share the cap, least recently used
    /// out first, never the kept copy nor local media; their files go with their last row.
    #[tokio::test]
    async fn eviction_counts_thumbnails_and_spares_the_new_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("appliance.db")).unwrap();
        let store = Arc::new(MediaStore::open(&dir.path().join("media")).unwrap());
        let mut hashes = Vec::new();
        for content in [
            &b"old original"[..],
            b"thumbnail",
            b"new original",
            b"local",
        ] {
            let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::copy_from_slice(content),
            )]);
            let received = store.receive(body, 100).await.unwrap();
            hashes.push(received.sha256.clone());
            store.commit(received).unwrap();
        }
        let original = |origin: &str, id: &str, sha256: &str, used: i64, size: i64| MediaRow {
            origin: origin.to_owned(),
            media_id: id.to_owned(),
            uploader: None,
            content_type: None,
            filename: None,
            size: Some(size),
            sha256: Some(sha256.to_owned()),
            created_ts: used,
            uploaded_ts: Some(used),
            last_access_ts: Some(used),
            authenticated: false,
        };
        let rows = [
            original("remote.test", "old", &hashes[0], 1, 100),
            original("remote.test", "new", &hashes[2], 3, 100),
            original("local.test", "mine", &hashes[3], 0, 1000),
        ];
        let thumbnail = RemoteThumbnail {
            origin: "remote.test".to_owned(),
            media_id: "other".to_owned(),
            width: 32,
            height: 32,
            method: "crop".to_owned(),
            content_type: Some("image/png".to_owned()),
            size: 100,
            sha256: hashes[1].clone(),
            created_ts: 2,
            last_access_ts: 2,
        };
        let (writer_store, local) = (store.clone(), "local.test");
        let evicted = db
            .write(move |tx| {
                for row in &rows {
                    media_store::insert(tx, row)?;
                }
                media_store::put_remote_thumbnail(tx, &thumbnail)?;
                let keep = |copy: &CachedCopy| {
                    matches!(copy, CachedCopy::Original(row) if row.media_id == "new")
                };
                // 300 bytes of remote copies under a cap of 150: two go, the oldest first.
                evict(tx, &writer_store, local, 150, &keep)
            })
            .await
            .unwrap();
        assert_eq!(evicted, 2);
        let left = db
            .read(|c| {
                Ok::<_, rusqlite::Error>((
                    media_store::get(c, "remote.test", "old")?.is_some(),
                    media_store::get(c, "remote.test", "new")?.is_some(),
                    media_store::get(c, "local.test", "mine")?.is_some(),
                    media_store::remote_thumbnails_of(c, "remote.test", "other")?.len(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(left, (false, true, true, 0));
        assert!(!store.content_path(&hashes[0]).exists());
        assert!(!store.content_path(&hashes[1]).exists());
        assert!(store.content_path(&hashes[2]).exists());
        assert!(store.content_path(&hashes[3]).exists());
    }
}
