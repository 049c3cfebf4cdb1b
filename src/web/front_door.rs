//! What each listener serves, from its `resources`: the application (`client`, `federation`),
//! ACME HTTP-01 answers (`acme`), and a 308 to HTTPS for everything else (`redirect`); plus HSTS
//! on TLS listeners.

use axum::{
    Router,
    extract::{Path, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{acme::challenges::Http01Answers, config::Listener, error::Error};

/// Two years, as the HSTS preload list asks; no `includeSubDomains`: other hosts of the domain
/// are not this box's to decide.
const HSTS: &str = "max-age=63072000";

pub fn listener_router(
    app: &Router,
    listener: &Listener,
    http01: &Http01Answers,
    https_port: Option<u16>,
) -> Router {
    let serves_app = listener.serves("client") || listener.serves("federation");
    let mut router = if serves_app {
        let resources = ServedResources {
            client: listener.serves("client"),
            federation: listener.serves("federation"),
        };
        app.clone()
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                only_served_resources(resources, request, next)
            }))
    } else {
        Router::new()
    };
    if listener.serves("acme") {
        let answers = http01.clone();
        router = router.merge(Router::new().route(
            "/.well-known/acme-challenge/{token}",
            // A token that is not UTF-8 is no token this server handed out.
            get(move |token: Result<Path<String>, _>| async move {
                let token: Result<Path<String>, axum::extract::rejection::PathRejection> = token;
                match token.ok().and_then(|Path(token)| answers.get(&token)) {
                    Some(answer) => ([(header::CONTENT_TYPE, "application/octet-stream")], answer)
                        .into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        ));
    }
    if listener.serves("redirect") && !serves_app {
        router = router.fallback(move |request: Request| async move {
            redirect_to_https(&request, https_port)
        });
    }
    if listener.tls {
        router = router.layer(middleware::from_fn(strict_transport_security));
    }
    router
}

/// Which of the app's resources a listener serves, as Synapse's listener `resources` names:
/// `federation` is the server-server API and key publication (`/_matrix/federation/`,
/// `/_matrix/key/`), `client` everything else (client API, media, well-known, Element).
#[derive(Clone, Copy)]
struct ServedResources {
    client: bool,
    federation: bool,
}

/// Whether a path belongs to the `federation` resource.
pub fn is_federation_path(path: &str) -> bool {
    path.starts_with("/_matrix/federation/") || path.starts_with("/_matrix/key/")
}

/// `404 M_UNRECOGNIZED` for paths of a resource this listener does not serve, as for any unknown
/// path: a client-only listener answers no federation request, and the federation port serves
/// no client API.
async fn only_served_resources(
    resources: ServedResources,
    request: Request,
    next: Next,
) -> Response {
    let federation_path = is_federation_path(request.uri().path());
    let served = if federation_path {
        resources.federation
    } else {
        resources.client
    };
    if served {
        next.run(request).await
    } else {
        Error::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request").into_response()
    }
}

/// The same URL on https (`https_port` when it is not 443, for a box on other ports).
fn redirect_to_https(request: &Request, https_port: Option<u16>) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(crate::net::certificates::host_without_port)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        });
    let Some(host) = host else {
        return Error::missing_param("A Host header is needed").into_response();
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = match https_port {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{host}{port}{path}");
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => Error::invalid_param("The request cannot be redirected").into_response(),
    }
}

async fn strict_transport_security(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    response
}
