//! The media repository's settings: Synapse's keys (`media_store_path`, `max_image_pixels`,
//! `thumbnail_sizes`, …), which sit at the top level of the config as they do in
//! `homeserver.yaml`, and their checks.

use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{ByteSize, Config, Duration};

/// The folder under `data_dir` that holds media when `media_store_path` is unset.
pub const DEFAULT_MEDIA_STORE_DIR: &str = "media_store";

/// A thumbnail size the server makes, as an entry of Synapse's `thumbnail_sizes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    /// `crop` (fill exactly this size, cutting the edges) or `scale` (fit inside it).
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// Synapse's default `thumbnail_sizes`.
pub fn default_thumbnail_sizes() -> Vec<ThumbnailSize> {
    use ThumbnailMethod::{Crop, Scale};
    [
        (32, 32, Crop),
        (96, 96, Crop),
        (320, 240, Scale),
        (640, 480, Scale),
        (800, 600, Scale),
    ]
    .into_iter()
    .map(|(width, height, method)| ThumbnailSize {
        width,
        height,
        method,
    })
    .collect()
}

/// Synapse's `media_retention` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaRetention {
    /// This server's media not served for this long (or, never served, not uploaded for this
    /// long) is deleted, checked hourly; users' and rooms' avatars are kept. `null` keeps
    /// everything; `appliance admin media purge-local` deletes by hand.
    pub local_media_lifetime: Option<Duration>,
    /// Cached copies of other servers' media not accessed for this long are deleted (checked
    /// hourly); they are fetched again when asked for. `null` keeps them;
    /// `appliance admin media purge-remote` deletes them by hand.
    pub remote_media_lifetime: Option<Duration>,
}

/// Synapse's defaults for the media keys of [`Config`].
pub fn default_max_image_pixels() -> ByteSize {
    ByteSize::mebibytes(32)
}

pub const DEFAULT_MAX_PENDING_MEDIA_UPLOADS: u32 = 5;
pub const DEFAULT_UNUSED_EXPIRATION_TIME: Duration = Duration::from_secs(24 * 3600);

/// The largest thumbnail dimension accepted in `thumbnail_sizes` (and made on request with
/// `dynamic_thumbnails`): bigger ones are no longer thumbnails.
pub const MAX_THUMBNAIL_DIMENSION: u32 = 4096;

impl Config {
    /// Where media files live.
    pub fn media_store_path(&self) -> PathBuf {
        self.media_store_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_MEDIA_STORE_DIR))
    }
}

pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    if config.max_image_pixels.0 == 0 {
        return Err(("max_image_pixels", "must be above 0".to_owned()));
    }
    for size in &config.thumbnail_sizes {
        let valid = (1..=MAX_THUMBNAIL_DIMENSION).contains(&size.width)
            && (1..=MAX_THUMBNAIL_DIMENSION).contains(&size.height);
        if !valid {
            return Err((
                "thumbnail_sizes",
                format!(
                    "{}x{}: width and height must be 1 to {MAX_THUMBNAIL_DIMENSION}",
                    size.width, size.height
                ),
            ));
        }
    }
    for (key, ranges) in [
        (
            "url_preview_ip_range_blacklist",
            &config.url_preview_ip_range_blacklist,
        ),
        (
            "url_preview_ip_range_whitelist",
            &config.url_preview_ip_range_whitelist,
        ),
    ] {
        if let Some(range) = ranges.iter().find(|range| !is_cidr(range)) {
            return Err((
                key,
                format!("`{range}` is not an IP range such as 10.0.0.0/8 or fe80::/10"),
            ));
        }
    }
    if let Err(e) =
        crate::services::media::preview::UrlBlacklist::new(&config.url_preview_url_blacklist)
    {
        return Err(("url_preview_url_blacklist", e));
    }
    if config.max_spider_size.0 == 0 {
        return Err(("max_spider_size", "must be above 0".to_owned()));
    }
    if config.max_remote_media_cache_size.0 == 0 {
        return Err((
            "max_remote_media_cache_size",
            "must be above 0 (remote media is served from its cached copy)".to_owned(),
        ));
    }
    if config.max_pending_media_uploads == 0 {
        return Err(("max_pending_media_uploads", "must be at least 1".to_owned()));
    }
    Ok(())
}

/// `address/prefix` (or a bare address) with a prefix that fits the address family.
fn is_cidr(text: &str) -> bool {
    let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
    let Ok(address) = address.parse::<IpAddr>() else {
        return false;
    };
    if prefix.is_empty() {
        return !text.contains('/');
    }
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Config, super::super::ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn media_defaults_are_synapses() {
        let config = parse("server_name: example.org\n").unwrap();
        assert_eq!(config.max_image_pixels, ByteSize::mebibytes(32));
        assert_eq!(config.thumbnail_sizes.len(), 5);
        assert_eq!(
            config.thumbnail_sizes[2],
            ThumbnailSize {
                width: 320,
                height: 240,
                method: ThumbnailMethod::Scale
            }
        );
        assert!(!config.dynamic_thumbnails);
        assert!(!config.url_preview_enabled);
        assert_eq!(
            config.media_store_path(),
            config.data_dir.join("media_store")
        );
    }

    #[test]
    fn media_keys_are_checked() {
        let config = parse(
            "thumbnail_sizes:\n  - {width: 10, height: 20, method: scale}\nmax_image_pixels: 1M\n",
        )
        .unwrap();
        assert_eq!(config.thumbnail_sizes.len(), 1);
        assert_eq!(config.max_image_pixels.0, 1024 * 1024);
        for bad in [
            "thumbnail_sizes:\n  - {width: 0, height: 20, method: scale}\n",
            "thumbnail_sizes:\n  - {width: 10, height: 20, method: stretch}\n",
            "url_preview_ip_range_blacklist: ['10.0.0.0/33']\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        parse("url_preview_ip_range_blacklist: ['10.0.0.0/8', 'fe80::/10', '::1']\n").unwrap();
        parse("url_preview_enabled: true\nurl_preview_ip_range_whitelist: ['127.0.0.1']\n")
            .unwrap();
        parse("url_preview_url_blacklist: [{netloc: '*.example.com'}, {path: '^/private/'}]\n")
            .unwrap();
        assert!(parse("url_preview_url_blacklist: [{path: '^(unclosed'}]\n").is_err());
        assert!(parse("url_preview_url_blacklist: [{colour: 'red'}]\n").is_err());
        assert!(parse("url_preview_ip_range_whitelist: ['localhost']\n").is_err());
        parse("media_retention: {remote_media_lifetime: 14d}\n").unwrap();
        parse("media_retention: {local_media_lifetime: 90d}\n").unwrap();
        let config = parse("max_remote_media_cache_size: 200M\n").unwrap();
        assert_eq!(config.max_remote_media_cache_size.0, 200 * 1024 * 1024);
        assert!(parse("max_remote_media_cache_size: 0\n").is_err());
    }
}
