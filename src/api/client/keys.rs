//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! cross-signing (`/keys/device_signing/upload`, `/keys/signatures/upload`) and
//! `/sendToDevice`.

use axum::{Router, extract::State};
use ruma::api::client::{
    keys::{
        claim_keys::v3 as claim_keys, get_key_changes::v3 as get_key_changes,
        get_keys::v3 as get_keys, upload_keys::v3 as upload_keys,
        upload_signatures::v3 as upload_signatures, upload_signing_keys::v3 as upload_signing_keys,
    },
    to_device::send_event_to_device::v3 as send_event_to_device,
};

use crate::{
    services::e2ee::{cross_signing, keys, to_device},
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<upload_keys::Request, _, _>(upload_keys)
        .ruma::<get_keys::Request, _, _>(get_keys)
        .ruma::<claim_keys::Request, _, _>(claim_keys)
        .ruma::<get_key_changes::Request, _, _>(get_key_changes)
        .ruma::<upload_signing_keys::Request, _, _>(upload_signing_keys)
        .ruma::<upload_signatures::Request, _, _>(upload_signatures)
        .ruma::<send_event_to_device::Request, _, _>(send_event_to_device)
}

/// `POST /_matrix/client/v3/keys/upload`
async fn upload_keys(
    State(services): State<AppState>,
    request: Ruma<upload_keys::Request>,
) -> ApiResult<upload_keys::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let counts = keys::upload(
        &services,
        &sender,
        keys::Upload {
            device_keys: body.device_keys,
            one_time_keys: body.one_time_keys,
            fallback_keys: body.fallback_keys,
        },
    )
    .await?;
    Ok(upload_keys::Response::new(counts).into())
}

/// `POST /_matrix/client/v3/keys/query`
async fn get_keys(
    State(services): State<AppState>,
    request: Ruma<get_keys::Request>,
) -> ApiResult<get_keys::Response> {
    let sender = request.sender()?.clone();
    Ok(keys::query(
        &services,
        &sender.user_id,
        request.body.device_keys,
        request.body.timeout,
    )
    .await?
    .into())
}

/// `POST /_matrix/client/v3/keys/claim`
async fn claim_keys(
    State(services): State<AppState>,
    request: Ruma<claim_keys::Request>,
) -> ApiResult<claim_keys::Response> {
    request.sender()?;
    Ok(
        keys::claim(&services, request.body.one_time_keys, request.body.timeout)
            .await?
            .into(),
    )
}

/// `GET /_matrix/client/v3/keys/changes`
async fn get_key_changes(
    State(services): State<AppState>,
    request: Ruma<get_key_changes::Request>,
) -> ApiResult<get_key_changes::Response> {
    let sender = request.sender()?;
    let (changed, left) = keys::changes(
        &services,
        &sender.user_id,
        &request.body.from,
        &request.body.to,
    )
    .await?;
    Ok(get_key_changes::Response::new(changed, left).into())
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
async fn upload_signing_keys(
    State(services): State<AppState>,
    request: Ruma<upload_signing_keys::Request>,
) -> ApiResult<upload_signing_keys::Response> {
    let sender = request.sender()?.clone();
    let operation = request.uia_operation();
    let body = request.body;
    cross_signing::upload_signing_keys(
        &services,
        &sender,
        cross_signing::SigningKeys {
            auth: body.auth,
            master: body.master_key,
            self_signing: body.self_signing_key,
            user_signing: body.user_signing_key,
            operation,
        },
    )
    .await?;
    Ok(upload_signing_keys::Response::new().into())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
async fn upload_signatures(
    State(services): State<AppState>,
    request: Ruma<upload_signatures::Request>,
) -> ApiResult<upload_signatures::Response> {
    let sender = request.sender()?.clone();
    let failures =
        cross_signing::upload_signatures(&services, &sender, request.body.signed_keys).await?;
    let mut response = upload_signatures::Response::new();
    response.failures = failures;
    Ok(response.into())
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
async fn send_event_to_device(
    State(services): State<AppState>,
    request: Ruma<send_event_to_device::Request>,
) -> ApiResult<send_event_to_device::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    to_device::send(
        &services,
        &sender,
        &body.event_type.to_string(),
        &body.txn_id,
        body.messages,
    )
    .await?;
    Ok(send_event_to_device::Response::new().into())
}
