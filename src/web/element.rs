//! Element Web, served from a release directory: on its own host name (`element.host`) or under
//! `element.path_prefix` of the homeserver's host. `config.json` is generated from the
//! appliance's config and served in place of any file; `index.html` and the config are never
//! cached, hashed bundles are cached for a year; precompressed `.br`/`.gz` files are used when
//! the client accepts them; Element's recommended security headers go on every response, and
//! any path that tries to leave the release directory is refused.
//!
//! Files are served by tower-http's `ServeDir` (with its precompressed variants); a traversal
//! attempt is refused before any file lookup (`refuse_traversal`).

use std::path::{Path, PathBuf};

use axum::{
    Router,
    extract::{OriginalUri, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use http::{HeaderValue, StatusCode, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::config::Config;

const NO_CACHE: &str = "no-cache";
const ONE_YEAR: &str = "public, max-age=31536000, immutable";

/// Where the served release lives ([`Config::element_release_dir`]).
pub fn release_dir(config: &Config) -> PathBuf {
    config.element_release_dir()
}

/// Adds Element to `router` when it is enabled.
pub fn mount(router: Router, config: &Config) -> Router {
    if !config.element.enabled {
        return router;
    }
    let element = element_router(config);
    match &config.element.host {
        Some(host) => {
            let host = host.to_ascii_lowercase();
            router.layer(middleware::from_fn(move |request: Request, next: Next| {
                let element = element.clone();
                let for_element = request_host(&request).is_some_and(|h| h == host);
                async move {
                    if for_element {
                        element.oneshot(request).await.into_response()
                    } else {
                        next.run(request).await
                    }
                }
            }))
        }
        None => {
            let prefix = config.element.path_prefix.trim_end_matches('/').to_owned();
            let element = element.layer(middleware::from_fn_with_state(prefix.clone(), add_slash));
            router.nest_service(&prefix, element)
        }
    }
}

/// `/element` → `/element/`, so that the relative URLs in Element's `index.html` resolve.
async fn add_slash(State(prefix): State<String>, request: Request, next: Next) -> Response {
    let exact = request
        .extensions()
        .get::<OriginalUri>()
        .is_some_and(|uri| uri.path() == prefix);
    if exact {
        return Redirect::permanent(&format!("{prefix}/")).into_response();
    }
    next.run(request).await
}

/// The host a request is for, without port: `:authority` (HTTP/2) or `Host`.
fn request_host(request: &Request) -> Option<String> {
    let authority = request.uri().host().map(str::to_owned).or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| crate::net::certificates::host_without_port(h).to_owned())
    })?;
    Some(authority.to_ascii_lowercase())
}

fn element_router(config: &Config) -> Router {
    let generated = config_json(config).to_string();
    let files = ServeDir::new(release_dir(config))
        .precompressed_br()
        .precompressed_gzip()
        .append_index_html_on_directories(true);
    Router::new()
        .route(
            "/config.json",
            get(move || async move {
                ([(header::CONTENT_TYPE, "application/json")], generated).into_response()
            }),
        )
        .fallback_service(files)
        .layer(middleware::from_fn(headers))
        .layer(middleware::from_fn(refuse_traversal))
}

/// Element's `config.json` for this server.
pub fn config_json(config: &Config) -> serde_json::Value {
    let servers = if config.element.room_directory_servers.is_empty() {
        vec![config.server_name.clone()]
    } else {
        config.element.room_directory_servers.clone()
    };
    serde_json::json!({
        "default_server_config": {
            "m.homeserver": {
                "base_url": crate::api::well_known::public_baseurl(config).trim_end_matches('/'),
                "server_name": config.server_name,
            }
        },
        "disable_custom_urls": config.element.disable_custom_urls,
        "disable_guests": true,
        "brand": config.element.brand,
        "room_directory": { "servers": servers },
    })
}

/// Refuses, before any file is looked up, every path that could name something outside the
/// release: `..` (plain or percent-encoded), encoded slashes and backslashes, NUL, and empty
/// segments (`//etc/passwd`).
async fn refuse_traversal(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let lowered = path.to_ascii_lowercase();
    let suspicious = ["%2e", "%2f", "%5c", "%00", "\\", "//"]
        .iter()
        .any(|bad| lowered.contains(bad))
        || path
            .split('/')
            .any(|segment| segment == ".." || segment == ".");
    if suspicious {
        return crate::error::Error::invalid_param("Bad path").into_response();
    }
    // A request for another host's `config.<host>.json` must not find a stale file: Element
    // asks for it before `config.json`.
    let name = path.rsplit('/').next().unwrap_or("");
    if name.starts_with("config.") && name.ends_with(".json") && name != "config.json" {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    }
    next.run(request).await
}

async fn headers(request: Request, next: Next) -> Response {
    let cache = cache_policy(request.uri().path());
    let mut response = next.run(request).await;
    let cache = if response.status().is_success() {
        cache
    } else {
        NO_CACHE
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_XSS_PROTECTION,
        HeaderValue::from_static("1; mode=block"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'self'"),
    );
    response
}

/// Hashed files (everything under `bundles/`, or with a long hex part in the name) never
/// change, so they are cached for a year; `index.html`, `config.json`, `version` and the rest
/// are revalidated on every load, so an upgrade shows at once.
fn cache_policy(path: &str) -> &'static str {
    let path = path.trim_start_matches('/');
    let name = path.rsplit('/').next().unwrap_or("");
    let hashed_name = name
        .split('.')
        .any(|part| part.len() >= 8 && part.chars().all(|c| c.is_ascii_hexdigit()));
    if path.starts_with("bundles/") || hashed_name {
        ONE_YEAR
    } else {
        NO_CACHE
    }
}

/// The installed release's version (its `version` file), if any.
pub fn installed_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("version"))
        .ok()
        .map(|v| v.trim().to_owned())
}
