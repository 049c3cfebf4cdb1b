//! Synapse's shared-secret registration endpoint, for `register_new_matrix_user` and the scripts
//! that self-hosters already have, and `GET /users/{userId}/admin`, which Element Web asks to
//! decide whether to show admin tools. Not part of the Matrix spec, so the shapes are written
//! here, with Synapse's answers.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    web::{AppState, JsonBody, client_ip::ClientIp, ruma::authenticate_parts},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/register", get(nonce).post(register))
        .route(
            "/_synapse/admin/v1/users/{user_id}/admin",
            get(user_is_admin),
        )
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

#[derive(Serialize)]
struct AdminResponse {
    admin: bool,
}

/// `GET /_synapse/admin/v1/users/{userId}/admin`: for server admins only (`403 M_FORBIDDEN`
/// otherwise); an unknown local user is simply not an admin, a remote one is a `400`.
async fn user_is_admin(
    State(services): State<AppState>,
    Path(user_id): Path<String>,
    parts: http::request::Parts,
) -> Result<Json<AdminResponse>> {
    let sender = authenticate_parts(&services, &parts).await?;
    if !services.users.is_admin(&sender.user_id).await? {
        return Err(Error::forbidden("You are not a server admin"));
    }
    let user_id = UserId::parse(&user_id)
        .map_err(|_| Error::invalid_param(format!("Invalid user ID: {user_id}")))?;
    if user_id.server_name() != services.server_name {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Only local users can be admins of this homeserver",
        ));
    }
    Ok(Json(AdminResponse {
        admin: services.users.is_admin(&user_id).await?,
    }))
}
