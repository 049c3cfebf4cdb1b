//! The HTTP router: every API area's routes, the spec's fallbacks for unknown endpoints and
//! methods, and the layers every request passes (panic guard, tracing, CORS, body limit).
//!
//! The layers: a panic guard, per-request tracing of the path only (never the query: it may hold an
//! access token), CORS, the `max_upload_size` check on `Content-Length` (a refused body is not
//! drained when the client sent `Expect: 100-continue`), and `404`/`405` fallbacks answering
//! `M_UNRECOGNIZED`.

pub mod client_ip;
pub mod element;
mod error;
pub mod front_door;
#[cfg(test)]
mod hostile_requests;
pub mod ruma;
pub mod server_auth;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use http::{HeaderName, Method, StatusCode, header};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};
use tracing::Span;

use crate::{api, error::Error, services::Services};
pub use ruma::JsonBody;

/// The state every handler gets.
pub type AppState = Arc<Services>;

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let router = Router::new()
        .merge(api::client::routes())
        .merge(api::server::routes())
        .merge(api::synapse_admin::routes())
        .merge(api::well_known::routes())
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request") })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Unrecognized request")
        })
        // For the few handlers that read a body with axum's extractors instead of `Ruma`.
        .layer(DefaultBodyLimit::max(ruma::JSON_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.config.max_upload_size.0,
            refuse_oversized_bodies,
        ))
        .layer(cors())
        .layer(
            TraceLayer::new_for_http()
                // The path only: query strings may carry access tokens.
                .make_span_with(|request: &http::Request<_>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(|response: &http::Response<_>, latency: Duration, _span: &Span| {
                    tracing::info!(status = response.status().as_u16(), ms = latency.as_millis() as u64, "served");
                })
                .on_failure(()),
        )
        .layer(CatchPanicLayer::custom(|_| {
            Error::internal("a request handler panicked").into_response()
        }))
        .with_state(state);
    element::mount(router, &config)
}

/// How much of an oversized body is read and thrown away before the `413` goes out, and for how
/// long. Most HTTP clients send the whole body before they read the response: when the server
/// stops reading and closes early, they see a reset connection instead of `M_TOO_LARGE`. Past
/// these bounds the connection is closed anyway (nginx's "lingering close" works the same way).
const DRAIN_AT_MOST: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a request whose `Content-Length` exceeds `max_upload_size` with `M_TOO_LARGE`, on every
/// route, before any handler runs. JSON bodies have a far smaller limit, checked by the `Ruma`
/// extractor (`ruma::JSON_BODY_LIMIT`); media uploads are cut off while they stream to disk.
async fn refuse_oversized_bodies(
    State(limit): State<u64>,
    request: Request,
    next: Next,
) -> Response {
    if ruma::announced_length(request.headers()).is_none_or(|length| length <= limit) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    ruma::refuse_too_large(Body::new(body), &parts.headers)
        .await
        .into_response()
}

/// Reads and drops what is left of a refused body (bounded by [`DRAIN_AT_MOST`] and
/// [`DRAIN_TIMEOUT`]). Not when the client waits for `100 Continue` before sending it: reading
/// would ask for the body, and not reading lets the refusal go out at once.
pub async fn drain(body: Body, headers: &http::HeaderMap) {
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        return;
    }
    let mut body = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut drained = 0;
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len();
            if drained > DRAIN_AT_MOST {
                break;
            }
        }
    })
    .await;
}

/// The headers the spec asks of every client-server API response.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}

/// Reads a JSON body for the few endpoints that have no ruma type, with the spec's error codes.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        Error::new(
            StatusCode::BAD_REQUEST,
            ::ruma::api::error::ErrorKind::NotJson,
            "Content not JSON",
        )
    })?;
    serde_json::from_value(value).map_err(|e| Error::bad_json(format!("Invalid request body: {e}")))
}
