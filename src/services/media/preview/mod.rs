//! URL previews (`/preview_url`): the OpenGraph data of a page a user links to, fetched by the
//! server, with the page's picture stored as media so that clients show it from the homeserver.
//! Off unless `url_preview_enabled`: it makes the server fetch what users ask for, so `fetch`
//! checks every address after DNS resolution and bounds size and redirects, and here a fetch is
//! bounded in time, a few run at once, and answers are kept an hour (as Synapse).
//!
//! `fetch.rs` resolves the host with hickory and refuses the URL if any address is in a refused
//! range (`policy.rs`: private, loopback, link-local, CGNAT, multicast, documentation, reserved and
//! unspecified ranges always, plus `url_preview_ip_range_blacklist`, unless whitelisted;
//! IPv4-mapped IPv6 is checked as IPv4), connects to that checked address itself, speaks HTTP/1.1
//! over hyper (rustls with the system's CA certificates for https), follows at most 5 redirects by
//! hand, and reads at most `max_spider_size`. `opengraph.rs` tokenizes the page with html5gum. The
//! page's `og:image` is fetched the same way and stored as ordinary media of the requesting user.
//! Ten seconds at most per preview, four at once, each kept an hour in memory.

pub mod fetch;
pub mod opengraph;
pub mod policy;

use std::{
    collections::HashMap,
    io::Cursor,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use url::Url;

use crate::{
    config::Config,
    error::{Error, Result},
};
use fetch::{FetchError, Fetched, Fetcher};
use policy::IpPolicy;
pub use policy::UrlBlacklist;

/// How long a preview is served from memory.
const CACHE_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_CACHED: usize = 1000;
/// The whole preview: the page, its redirects and its picture.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENT_FETCHES: usize = 4;

pub type Preview = Arc<Map<String, Value>>;

pub struct UrlPreviews {
    fetcher: Fetcher,
    max_bytes: usize,
    cache: Mutex<HashMap<String, (Instant, Preview)>>,
    fetching: Semaphore,
}

impl UrlPreviews {
    /// `None` unless `url_preview_enabled`.
    pub fn new(config: &Config) -> anyhow::Result<Option<Self>> {
        if !config.url_preview_enabled {
            return Ok(None);
        }
        let ip_policy = IpPolicy::new(
            &config.url_preview_ip_range_blacklist,
            &config.url_preview_ip_range_whitelist,
        )
        .map_err(anyhow::Error::msg)?;
        let url_blacklist =
            UrlBlacklist::new(&config.url_preview_url_blacklist).map_err(anyhow::Error::msg)?;
        let resolver = TokioResolver::builder_tokio()?.build();
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(certificate);
        }
        if roots.is_empty() {
            tracing::warn!(
                "no system CA certificates (package ca-certificates): URL previews of https pages will fail"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(Self {
            fetcher: Fetcher::new(
                resolver,
                Arc::new(tls),
                ip_policy,
                url_blacklist,
                config.url_preview_accept_language.join(", "),
            ),
            max_bytes: usize::try_from(config.max_spider_size.0).unwrap_or(usize::MAX),
            cache: Mutex::new(HashMap::new()),
            fetching: Semaphore::new(CONCURRENT_FETCHES),
        }))
    }

    fn cached(&self, url: &str) -> Option<Preview> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(url)
            .filter(|(at, _)| at.elapsed() < CACHE_LIFETIME)
            .map(|(_, preview)| preview.clone())
    }

    fn remember(&self, url: String, preview: Preview) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_LIFETIME);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(url, (Instant::now(), preview));
    }
}

impl super::Media {
    /// The OpenGraph data of `url` for `user` (who becomes the uploader of its picture).
    pub async fn preview_url(&self, user: &UserId, url: &str) -> Result<Preview> {
        let Some(previews) = &self.previews else {
            return Err(Error::unrecognized(
                StatusCode::NOT_FOUND,
                "URL previews are not enabled on this server",
            ));
        };
        let url = Url::parse(url).map_err(|_| Error::invalid_param("Invalid URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        if previews.fetcher.blocks_url(&url) {
            return Err(blocked("URL blocked by url pattern blacklist entry"));
        }
        let key = url.to_string();
        if let Some(preview) = previews.cached(&key) {
            return Ok(preview);
        }
        let _turn = previews
            .fetching
            .acquire()
            .await
            .map_err(|_| Error::internal("URL previews are shutting down"))?;
        let preview = tokio::time::timeout(FETCH_TIMEOUT, self.make_preview(previews, user, url))
            .await
            .map_err(|_| fetch_failed("timed out"))??;
        let preview = Arc::new(preview);
        previews.remember(key, preview.clone());
        Ok(preview)
    }

    async fn make_preview(
        &self,
        previews: &UrlPreviews,
        user: &UserId,
        url: Url,
    ) -> Result<Map<String, Value>> {
        let page = previews
            .fetcher
            .get(url, previews.max_bytes)
            .await
            .map_err(from_fetch)?;
        let mut preview = Map::new();
        match media_type(&page).as_str() {
            kind if kind.starts_with("image/") => {
                if page.truncated {
                    return Err(fetch_failed("the picture is larger than max_spider_size"));
                }
                self.store_picture(user, page, &mut preview).await?;
            }
            "text/html" | "application/xhtml+xml" => {
                for (key, value) in opengraph::parse(&page.body) {
                    preview.insert(key, Value::String(value));
                }
                // The page's picture, stored here; a preview without it when it cannot be had.
                let picture = preview
                    .remove("og:image")
                    .and_then(|v| v.as_str().and_then(|src| page.url.join(src).ok()));
                if let Some(picture) = picture {
                    match previews.fetcher.get(picture, previews.max_bytes).await {
                        Ok(picture)
                            if !picture.truncated && media_type(&picture).starts_with("image/") =>
                        {
                            self.store_picture(user, picture, &mut preview).await?;
                        }
                        Ok(_) => {
                            tracing::debug!("URL preview: og:image is not a picture or too large")
                        }
                        Err(e) => tracing::debug!("URL preview: og:image not fetched: {e:?}"),
                    }
                }
            }
            // Anything else has no preview (as Synapse, an empty one).
            _ => {}
        }
        Ok(preview)
    }

    /// Stores a fetched picture as media and describes it as the preview's `og:image`.
    async fn store_picture(
        &self,
        user: &UserId,
        picture: Fetched,
        preview: &mut Map<String, Value>,
    ) -> Result<()> {
        let content_type = media_type(&picture);
        let size = picture.body.len();
        let dimensions = image::ImageReader::new(Cursor::new(&picture.body))
            .with_guessed_format()
            .ok()
            .and_then(|reader| reader.into_dimensions().ok());
        let body = Bytes::from(picture.body);
        let mxc = self
            .upload(
                user,
                Some(content_type.clone()),
                None,
                futures_util::stream::iter([Ok::<_, std::io::Error>(body)]),
            )
            .await?;
        preview.insert("og:image".into(), Value::String(mxc.to_string()));
        preview.insert("og:image:type".into(), Value::String(content_type));
        preview.insert("matrix:image:size".into(), size.into());
        if let Some((width, height)) = dimensions {
            preview.insert("og:image:width".into(), width.into());
            preview.insert("og:image:height".into(), height.into());
        }
        Ok(())
    }
}

/// The media type of a response without its parameters, lower-case (`text/html`).
fn media_type(fetched: &Fetched) -> String {
    fetched
        .content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// As Synapse: 403 `M_UNKNOWN` for what may not be fetched.
fn blocked(reason: &'static str) -> Error {
    Error::new(StatusCode::FORBIDDEN, ErrorKind::Unknown, reason)
}

/// As Synapse: 502 `M_UNKNOWN` when the page could not be had.
fn fetch_failed(reason: &str) -> Error {
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        format!("Failed to download content: {reason}"),
    )
}

fn from_fetch(error: FetchError) -> Error {
    match error {
        FetchError::Blocked(reason) => blocked(reason),
        FetchError::Failed(reason) => fetch_failed(&reason),
    }
}
