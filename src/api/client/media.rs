//! The content repository: uploads (`/_matrix/media/v3/upload`, `/_matrix/media/v1/create` with
//! the later `PUT`), the authenticated downloads and thumbnails of Matrix 1.11
//! (`/_matrix/client/v1/media/…`) and the legacy unauthenticated `/_matrix/media/v3/…` ones.
//!
//! Upload bodies are streamed to disk, so the upload handlers read the raw request instead of
//! `Ruma<T>` (which buffers the body); downloads use `Ruma<T>` for the path, query and token and
//! answer with the streamed file.

// The legacy `/_matrix/media/v3` endpoints are deprecated by the spec; serving them is the point.
#![allow(deprecated)]

use std::time::Duration;

use axum::{
    Router,
    extract::{Query, Request, State},
};
use http::{HeaderMap, header};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName, UInt,
    api::client::{
        authenticated_media as auth_media,
        media::{
            create_content::v3 as create_content, create_content_async::v3 as create_async,
            create_mxc_uri::v1 as create_mxc_uri, get_content::v3 as legacy_content,
            get_content_as_filename::v3 as legacy_filename,
            get_content_thumbnail::v3 as legacy_thumbnail, get_media_config::v3 as legacy_config,
            get_media_preview::v3 as legacy_preview,
        },
    },
    media::Method,
};
use serde::Deserialize;

use crate::{
    api::media_http::{MediaResponse, file_response, thumbnail_request},
    error::{Error, Result},
    services::{media::Access, sessions::Identity},
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes, authenticate_parts},
    },
};

pub fn routes() -> Router<AppState> {
    use auth_media::{
        get_content::v1 as content, get_content_as_filename::v1 as filename,
        get_content_thumbnail::v1 as thumbnail, get_media_config::v1 as config,
        get_media_preview::v1 as preview,
    };
    Router::new()
        .ruma::<create_content::Request, _, _>(upload)
        .ruma::<create_mxc_uri::Request, _, _>(create_mxc)
        .ruma::<create_async::Request, _, _>(upload_to_created)
        .ruma::<config::Request, _, _>(get_config)
        .ruma::<legacy_config::Request, _, _>(get_legacy_config)
        .ruma::<content::Request, _, _>(download)
        .ruma::<filename::Request, _, _>(download_as)
        .ruma::<thumbnail::Request, _, _>(get_thumbnail)
        .ruma::<legacy_content::Request, _, _>(legacy_download)
        .ruma::<legacy_filename::Request, _, _>(legacy_download_as)
        .ruma::<legacy_thumbnail::Request, _, _>(legacy_get_thumbnail)
        .ruma::<preview::Request, _, _>(preview_url)
        .ruma::<legacy_preview::Request, _, _>(legacy_preview_url)
        // matrix-nio asks for `/download/{serverName}/{mediaId}/` (an empty file name).
        .route_with_trailing_slash::<content::Request, _, _>(download)
        .route_with_trailing_slash::<legacy_content::Request, _, _>(legacy_download)
}

trait TrailingSlash {
    fn route_with_trailing_slash<Req, H, X>(self, handler: H) -> Self
    where
        Req: ruma::api::IncomingRequest,
        H: axum::handler::Handler<X, AppState>,
        X: 'static;
}

impl TrailingSlash for Router<AppState> {
    fn route_with_trailing_slash<Req, H, X>(mut self, handler: H) -> Self
    where
        Req: ruma::api::IncomingRequest,
        H: axum::handler::Handler<X, AppState>,
        X: 'static,
    {
        use ruma::api::path_builder::PathBuilder;
        for path in Req::PATH_BUILDER.all_paths() {
            self = self.route(&format!("{path}/"), axum::routing::get(handler.clone()));
        }
        self
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// What the upload handlers read before the body: the sender, `?filename=` and `Content-Type`.
struct UploadHead {
    sender: Identity,
    filename: Option<String>,
    content_type: Option<String>,
}

async fn upload_head(services: &AppState, parts: &http::request::Parts) -> Result<UploadHead> {
    // Guests may not upload (Synapse's rule; the spec lists only downloads for them).
    let sender = authenticate_parts(services, parts).await?;
    // A file may take far longer to arrive than a JSON body (only for a known sender).
    if let Some(deadline) = parts.extensions.get::<crate::net::deadline::BodyDeadline>() {
        deadline.extend_to(services.config.client_upload_deadline.0);
    }
    let Query(query) = Query::<UploadQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("Invalid query: {e}")))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Error::invalid_param("Content-Type must be ASCII"))
        })
        .transpose()?;
    Ok(UploadHead {
        sender,
        filename: query.filename,
        content_type,
    })
}

/// `POST /_matrix/media/v3/upload`
async fn upload(
    State(services): State<AppState>,
    request: Request,
) -> ApiResult<create_content::Response> {
    let (parts, body) = request.into_parts();
    let head = upload_head(&services, &parts).await?;
    let uri = services
        .media
        .upload(
            &head.sender.user_id,
            head.content_type,
            head.filename,
            body.into_data_stream(),
        )
        .await?;
    Ok(create_content::Response::new(uri).into())
}

/// `POST /_matrix/media/v1/create`
async fn create_mxc(
    State(services): State<AppState>,
    request: Ruma<create_mxc_uri::Request>,
) -> ApiResult<create_mxc_uri::Response> {
    let sender = request.sender()?;
    services.limits.media_create(&sender.user_id).await?;
    let (uri, expires_at) = services.media.create_pending(&sender.user_id).await?;
    let mut response = create_mxc_uri::Response::new(uri);
    response.unused_expires_at = UInt::try_from(expires_at)
        .ok()
        .map(MilliSecondsSinceUnixEpoch);
    Ok(response.into())
}

#[derive(Deserialize)]
struct MediaPath {
    server_name: String,
    media_id: String,
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to_created(
    State(services): State<AppState>,
    path: std::result::Result<
        axum::extract::Path<MediaPath>,
        axum::extract::rejection::PathRejection,
    >,
    request: Request,
) -> Result<axum::Json<serde_json::Value>> {
    let axum::extract::Path(path) =
        path.map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?;
    let server_name = parse_server_name(&path.server_name)?;
    let (parts, body) = request.into_parts();
    let head = upload_head(&services, &parts).await?;
    services
        .media
        .upload_pending(
            &head.sender.user_id,
            &server_name,
            &path.media_id,
            head.content_type,
            head.filename,
            body.into_data_stream(),
        )
        .await?;
    // ruma's `create_content_async` response is `{}` but cannot be constructed outside ruma.
    Ok(axum::Json(serde_json::json!({})))
}

fn parse_server_name(text: &str) -> Result<OwnedServerName> {
    ServerName::parse(text).map_err(|_| Error::invalid_param("Invalid server name"))
}

fn upload_size(services: &AppState) -> UInt {
    UInt::try_from(services.media.max_upload_size()).unwrap_or(UInt::MAX)
}

/// `GET /_matrix/client/v1/media/config`
async fn get_config(
    State(services): State<AppState>,
    _: Ruma<auth_media::get_media_config::v1::Request>,
) -> ApiResult<auth_media::get_media_config::v1::Response> {
    Ok(auth_media::get_media_config::v1::Response::new(upload_size(&services)).into())
}

/// `GET /_matrix/client/v1/media/preview_url`
async fn preview_url(
    State(services): State<AppState>,
    request: Ruma<auth_media::get_media_preview::v1::Request>,
) -> ApiResult<auth_media::get_media_preview::v1::Response> {
    let sender = request.sender()?;
    let preview = services
        .media
        .preview_url(&sender.user_id, &request.body.url)
        .await?;
    auth_media::get_media_preview::v1::Response::from_serialize(&*preview)
        .map(Into::into)
        .map_err(Error::internal)
}

/// `GET /_matrix/media/v3/preview_url` (deprecated, still authenticated)
async fn legacy_preview_url(
    State(services): State<AppState>,
    request: Ruma<legacy_preview::Request>,
) -> ApiResult<legacy_preview::Response> {
    let sender = request.sender()?;
    let preview = services
        .media
        .preview_url(&sender.user_id, &request.body.url)
        .await?;
    legacy_preview::Response::from_serialize(&*preview)
        .map(Into::into)
        .map_err(Error::internal)
}

/// `GET /_matrix/media/v3/config`
async fn get_legacy_config(
    State(services): State<AppState>,
    _: Ruma<legacy_config::Request>,
) -> ApiResult<legacy_config::Response> {
    #[allow(deprecated)]
    Ok(legacy_config::Response::new(upload_size(&services)).into())
}

async fn serve_content(
    services: &AppState,
    headers: &HeaderMap,
    (server_name, media_id): (&ServerName, &str),
    filename: Option<&str>,
    timeout: Duration,
    access: Access,
) -> MediaResponse {
    MediaResponse(
        async {
            let content = services
                .media
                .content(server_name, media_id, timeout, access)
                .await?;
            file_response(headers, content, filename).await
        }
        .await,
    )
}

async fn serve_thumbnail(
    services: &AppState,
    headers: &HeaderMap,
    (server_name, media_id): (&ServerName, &str),
    (width, height, method): (UInt, UInt, Option<&Method>),
    timeout: Duration,
    access: Access,
) -> MediaResponse {
    MediaResponse(
        async {
            let request = thumbnail_request(width, height, method)?;
            let content = services
                .media
                .thumbnail(server_name, media_id, request, timeout, access)
                .await?;
            file_response(headers, content, None).await
        }
        .await,
    )
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<auth_media::get_content::v1::Request>,
) -> MediaResponse {
    let body = &request.body;
    let id = (&*body.server_name, body.media_id.as_str());
    serve_content(
        &services,
        &headers,
        id,
        None,
        body.timeout_ms,
        Access::Authenticated,
    )
    .await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<auth_media::get_content_as_filename::v1::Request>,
) -> MediaResponse {
    let body = &request.body;
    let id = (&*body.server_name, body.media_id.as_str());
    let filename = Some(body.filename.as_str());
    serve_content(
        &services,
        &headers,
        id,
        filename,
        body.timeout_ms,
        Access::Authenticated,
    )
    .await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn get_thumbnail(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<auth_media::get_content_thumbnail::v1::Request>,
) -> MediaResponse {
    let body = &request.body;
    let id = (&*body.server_name, body.media_id.as_str());
    let size = (body.width, body.height, body.method.as_ref());
    serve_thumbnail(
        &services,
        &headers,
        id,
        size,
        body.timeout_ms,
        Access::Authenticated,
    )
    .await
}

/// Remote media is never fetched for a request with `allow_remote=false`.
fn refuse_remote(
    services: &AppState,
    server_name: &ServerName,
    allow_remote: bool,
) -> Option<MediaResponse> {
    (!allow_remote && server_name != services.server_name)
        .then(|| MediaResponse(Err(Error::not_found("Not found"))))
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (unauthenticated)
async fn legacy_download(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<legacy_content::Request>,
) -> MediaResponse {
    let body = &request.body;
    if let Some(refused) = refuse_remote(&services, &body.server_name, body.allow_remote) {
        return refused;
    }
    let id = (&*body.server_name, body.media_id.as_str());
    serve_content(
        &services,
        &headers,
        id,
        None,
        body.timeout_ms,
        Access::Legacy,
    )
    .await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (unauthenticated)
async fn legacy_download_as(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<legacy_filename::Request>,
) -> MediaResponse {
    let body = &request.body;
    if let Some(refused) = refuse_remote(&services, &body.server_name, body.allow_remote) {
        return refused;
    }
    let id = (&*body.server_name, body.media_id.as_str());
    let filename = Some(body.filename.as_str());
    serve_content(
        &services,
        &headers,
        id,
        filename,
        body.timeout_ms,
        Access::Legacy,
    )
    .await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (unauthenticated)
async fn legacy_get_thumbnail(
    State(services): State<AppState>,
    headers: HeaderMap,
    request: Ruma<legacy_thumbnail::Request>,
) -> MediaResponse {
    let body = &request.body;
    if let Some(refused) = refuse_remote(&services, &body.server_name, body.allow_remote) {
        return refused;
    }
    let id = (&*body.server_name, body.media_id.as_str());
    let size = (body.width, body.height, body.method.as_ref());
    serve_thumbnail(
        &services,
        &headers,
        id,
        size,
        body.timeout_ms,
        Access::Legacy,
    )
    .await
}
