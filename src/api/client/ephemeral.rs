//! Typing notifications, read receipts and read markers.

use axum::extract::State;
use ruma::api::client::{
    read_marker::set_read_marker::v3 as set_read_marker,
    receipt::create_receipt::v3::{self as create_receipt, ReceiptType},
    typing::create_typing_event::v3::{self as create_typing_event, Typing},
};
use ruma::events::receipt::ReceiptThread;

use crate::{
    error::Error,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn create_typing_event(
    State(services): State<AppState>,
    request: Ruma<create_typing_event::Request>,
) -> ApiResult<create_typing_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own typing state"));
    }
    services
        .rooms
        .require_joined(&body.room_id, &sender.user_id)
        .await?;
    let timeout = match &body.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    if services
        .typing
        .set(&body.room_id, &sender.user_id, timeout)
        .is_some()
    {
        // Typing is not in the persisted stream; waking waiters makes them re-check it.
        services.rooms.wake();
        let (sender, room, user) = (
            services.federation_sender.clone(),
            body.room_id.clone(),
            sender.user_id.clone(),
        );
        tokio::spawn(async move { sender.typing(&room, &user, timeout.is_some()).await });
    }
    Ok(create_typing_event::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn create_receipt(
    State(services): State<AppState>,
    request: Ruma<create_receipt::Request>,
) -> ApiResult<create_receipt::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services
        .rooms
        .require_joined(&body.room_id, &sender.user_id)
        .await?;
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => String::new(),
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(id) => id.to_string(),
        _ => String::new(),
    };
    match &body.receipt_type {
        ReceiptType::FullyRead if !thread.is_empty() => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidParam,
                "m.fully_read receipts have no thread",
            ));
        }
        ReceiptType::FullyRead => {
            services
                .account_data
                .set_fully_read(
                    &services.rooms,
                    &sender.user_id,
                    &body.room_id,
                    &body.event_id,
                )
                .await?;
        }
        ReceiptType::Read | ReceiptType::ReadPrivate => {
            let receipt_type = body.receipt_type.to_string();
            services
                .account_data
                .put_receipt(
                    &services.rooms,
                    &body.room_id,
                    &sender.user_id,
                    &receipt_type,
                    &thread,
                    body.event_id.as_str(),
                )
                .await?;
        }
        // The spec's three types only, as Synapse: a client's typo must not become a receipt
        // that every member's /sync carries.
        other => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidParam,
                format!("Unknown receipt type {other}"),
            ));
        }
    }
    Ok(create_receipt::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn set_read_marker(
    State(services): State<AppState>,
    request: Ruma<set_read_marker::Request>,
) -> ApiResult<set_read_marker::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services
        .rooms
        .require_joined(&body.room_id, &sender.user_id)
        .await?;
    if let Some(event_id) = &body.fully_read {
        services
            .account_data
            .set_fully_read(&services.rooms, &sender.user_id, &body.room_id, event_id)
            .await?;
    }
    for (receipt_type, event_id) in [
        ("m.read", &body.read_receipt),
        ("m.read.private", &body.private_read_receipt),
    ] {
        if let Some(event_id) = event_id {
            services
                .account_data
                .put_receipt(
                    &services.rooms,
                    &body.room_id,
                    &sender.user_id,
                    receipt_type,
                    "",
                    event_id.as_str(),
                )
                .await?;
        }
    }
    Ok(set_read_marker::Response::new().into())
}
