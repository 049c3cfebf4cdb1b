//! Media for other servers (`/_matrix/federation/v1/media/…`): this server's own media as
//! `multipart/mixed` (metadata, then the file), for X-Matrix-signed requests.

use axum::{Router, extract::State, response::IntoResponse};
use ruma::api::federation::authenticated_media::{
    get_content::v1 as get_content, get_content_thumbnail::v1 as get_thumbnail,
};

use crate::{
    api::media_http::{MediaResponse, multipart_response, thumbnail_request},
    error::Result,
    services::media::Access,
    web::{
        AppState,
        ruma::{Ruma, RumaRoutes},
        server_auth::ServerOrigin,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_content::Request, _, _>(download)
        .ruma::<get_thumbnail::Request, _, _>(thumbnail)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(
    State(services): State<AppState>,
    ServerOrigin(origin): ServerOrigin,
    request: Ruma<get_content::Request>,
) -> impl IntoResponse {
    tracing::debug!(%origin, "media download over federation");
    let body = &request.body;
    MediaResponse(
        async {
            let content = services
                .media
                .content(
                    &services.server_name,
                    &body.media_id,
                    body.timeout_ms,
                    Access::Federation,
                )
                .await?;
            multipart_response(content).await
        }
        .await,
    )
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    State(services): State<AppState>,
    ServerOrigin(origin): ServerOrigin,
    request: Ruma<get_thumbnail::Request>,
) -> impl IntoResponse {
    tracing::debug!(%origin, "media thumbnail over federation");
    let body = &request.body;
    MediaResponse(
        async {
            let size = thumbnail_request(body.width, body.height, body.method.as_ref())?;
            let content = services
                .media
                .thumbnail(
                    &services.server_name,
                    &body.media_id,
                    size,
                    body.timeout_ms,
                    Access::Federation,
                )
                .await?;
            multipart_response(content).await
        }
        .await as Result<_>,
    )
}
