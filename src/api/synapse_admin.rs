//! Synapse's shared-secret registration endpoint, for `register_new_matrix_user` and the scripts
//! that self-hosters already have. Not part of the Matrix spec, so the shapes are written here.

use axum::{Json, Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};

use crate::{
    error::Result,
    web::{AppState, JsonBody, client_ip::ClientIp},
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/_synapse/admin/v1/register", get(nonce).post(register))
}

#[derive(Serialize)]
struct NonceResponse {
    nonce: String,
}

async fn nonce(
    State(services): State<AppState>,
    parts: http::request::Parts,
) -> Result<Json<NonceResponse>> {
    Ok(Json(NonceResponse {
        nonce: services
            .shared_secret
            .new_nonce(ClientIp::from_parts(&parts))?,
    }))
}

#[derive(Deserialize)]
struct RegisterRequest {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    mac: String,
    displayname: Option<String>,
}

#[derive(Serialize)]
struct RegisterResponse {
    user_id: String,
    access_token: String,
    home_server: String,
    device_id: String,
}

async fn register(
    State(services): State<AppState>,
    parts: http::request::Parts,
    JsonBody(body): JsonBody,
) -> Result<Json<RegisterResponse>> {
    let request: RegisterRequest = crate::web::parse_json(&body)?;
    services.shared_secret.verify(
        &request.nonce,
        &request.username,
        &request.password,
        request.admin,
        &request.mac,
    )?;
    // The MAC is over the name as sent; the account's name is normalised as everywhere else
    // (Synapse lowercases it here too).
    let user_id = services
        .users
        .new_user_id(&crate::services::users::normalize_new_user_name(
            &request.username,
        ))?;
    services
        .users
        .create(&user_id, Some(request.password), request.admin, |_| Ok(()))
        .await?;
    if let Some(name) = request.displayname {
        services.users.set_displayname(&user_id, Some(name)).await?;
    }
    let session = services
        .sessions
        .create(&user_id, None, None, Some(ClientIp::from_parts(&parts)))
        .await?;
    tracing::info!(user = %user_id, admin = request.admin, "registered with the shared secret");
    Ok(Json(RegisterResponse {
        user_id: user_id.to_string(),
        access_token: session.access_token,
        home_server: services.server_name.to_string(),
        device_id: session.device_id.to_string(),
    }))
}
