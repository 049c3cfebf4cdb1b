//! Delayed events (MSC4140, `services/delayed_events.rs`): `PUT /send` and `PUT /state` with
//! `?org.matrix.msc4140.delay=<ms>` schedule the event (without the parameter the ordinary
//! handlers in `events.rs` run), and the unstable management endpoints Synapse serves under
//! `/_matrix/client/unstable/org.matrix.msc4140/delayed_events`.

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
};
use std::time::Duration;

use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::client::{
        delayed_events::{
            DelayedEventData, delayed_message_event, delayed_state_event, get_all_delayed_events,
            get_delayed_event,
            update_delayed_event::{UpdateAction, unstable_v1, unstable_v2},
        },
        message::send_message_event::v3 as send_message_event,
        state::send_state_event::v3 as send_state_event,
    },
    events::TimelineEventType,
};
use serde::Serialize;

use super::events::{self, content_of};
use crate::{
    error::{Error, Result},
    services::{
        delayed_events::{self as delayed, Scheduled},
        rooms::check_type_and_state_key,
    },
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// The query parameter that makes a send a delayed one.
const DELAY_PARAMETER: &str = "org.matrix.msc4140.delay";

/// The delay a send asks for, read by hand: ruma 0.17's `DelayParameters` (an untagged enum
/// with a number inside) cannot be read from a query string, so its `delayed_message_event`
/// and `delayed_state_event` requests never parse. Synapse's answers for a bad value.
fn delay_of(uri: &http::Uri) -> Result<Option<Duration>> {
    let Some((_, value)) = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == DELAY_PARAMETER)
    else {
        return Ok(None);
    };
    match value.parse::<i64>() {
        Ok(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        Ok(_) => Err(Error::invalid_param(format!(
            "Query parameter {DELAY_PARAMETER:?} must be a positive integer."
        ))),
        Err(_) => Err(Error::invalid_param(format!(
            "Query parameter {DELAY_PARAMETER:?} must be an integer"
        ))),
    }
}

/// Parses `request` as `T` and runs `handler`, or answers the parse error.
async fn handle<T, F, Fut, R>(services: AppState, request: Request, handler: F) -> Response
where
    Ruma<T>: FromRequest<AppState, Rejection = Error>,
    F: FnOnce(AppState, Ruma<T>) -> Fut,
    Fut: Future<Output = R>,
    R: IntoResponse,
{
    match Ruma::<T>::from_request(request, &services).await {
        Ok(parsed) => handler(services, parsed).await.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`, delayed with
/// `?org.matrix.msc4140.delay=<ms>` or not. The request is read as the ordinary send's (the
/// token, then the body); a bad delay is refused after that, as in Synapse.
pub async fn send_message_event(State(services): State<AppState>, request: Request) -> Response {
    let delay = delay_of(request.uri());
    handle(
        services,
        request,
        async move |services, request| match delay {
            Ok(None) => events::send_message_event(State(services), request)
                .await
                .into_response(),
            Ok(Some(delay)) => schedule_message(services, request, delay)
                .await
                .into_response(),
            Err(e) => e.into_response(),
        },
    )
    .await
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`, delayed or not.
pub async fn send_state_event(State(services): State<AppState>, request: Request) -> Response {
    let delay = delay_of(request.uri());
    handle(
        services,
        request,
        async move |services, request| match delay {
            Ok(None) => events::send_state_event(State(services), request)
                .await
                .into_response(),
            Ok(Some(delay)) => schedule_state(services, request, delay)
                .await
                .into_response(),
            Err(e) => e.into_response(),
        },
    )
    .await
}

/// `PUT …/send/{eventType}/{txnId}?org.matrix.msc4140.delay=<ms>`: ruma's response.
async fn schedule_message(
    services: AppState,
    request: Ruma<send_message_event::Request>,
    delay: Duration,
) -> ApiResult<delayed_message_event::unstable::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    check_type_and_state_key(&body.event_type.to_string(), None)?;
    let event = Scheduled {
        room_id: body.room_id.clone(),
        kind: TimelineEventType::from(body.event_type.to_string()),
        state_key: None,
        content: content_of(&body.body)?,
        delay,
    };
    let delay_id = delayed::schedule(&services, sender, Some(body.txn_id.as_str()), event).await?;
    Ok(delayed_message_event::unstable::Response::new(delay_id).into())
}

/// `PUT …/state/{eventType}/{stateKey}?org.matrix.msc4140.delay=<ms>`: ruma's response.
async fn schedule_state(
    services: AppState,
    request: Ruma<send_state_event::Request>,
    delay: Duration,
) -> ApiResult<delayed_state_event::unstable::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    check_type_and_state_key(&body.event_type.to_string(), Some(&body.state_key))?;
    let event = Scheduled {
        room_id: body.room_id.clone(),
        kind: TimelineEventType::from(body.event_type.to_string()),
        state_key: Some(body.state_key.clone()),
        content: content_of(&body.body)?,
        delay,
    };
    let delay_id = delayed::schedule(&services, sender, None, event).await?;
    Ok(delayed_state_event::unstable::Response::new(delay_id).into())
}

/// A delayed event as Synapse lists it: ruma's fields (MSC4140's earlier `delay` and
/// `running_since`, which Synapse still sends) and the current `delay_ms` and
/// `delayed_since_ts`, which ruma 0.17's type does not have yet.
#[derive(Serialize)]
pub struct Listed {
    #[serde(flatten)]
    data: DelayedEventData,
    delay_ms: u64,
    delayed_since_ts: MilliSecondsSinceUnixEpoch,
}

impl From<DelayedEventData> for Listed {
    fn from(data: DelayedEventData) -> Self {
        Self {
            delay_ms: data.delay.as_millis() as u64,
            delayed_since_ts: data.running_since,
            data,
        }
    }
}

#[derive(Serialize)]
pub struct ListResponse {
    delayed_events: Vec<Listed>,
}

/// `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events`
pub async fn get_delayed_events(
    State(services): State<AppState>,
    request: Ruma<get_all_delayed_events::unstable::Request>,
) -> Result<Json<ListResponse>> {
    let sender = request.sender()?;
    let events = services
        .delayed_events
        .list(&sender.user_id, request.client_ip)
        .await?;
    Ok(Json(ListResponse {
        delayed_events: events.into_iter().map(Listed::from).collect(),
    }))
}

/// `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}`
pub async fn get_delayed_event(
    State(services): State<AppState>,
    request: Ruma<get_delayed_event::unstable::Request>,
) -> Result<Json<Listed>> {
    let sender = request.sender()?;
    let event = services
        .delayed_events
        .get(&sender.user_id, request.client_ip, &request.body.delay_id)
        .await?;
    Ok(Json(event.into()))
}

/// `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}` with
/// `{"action": "cancel" | "restart" | "send"}`.
pub async fn update_delayed_event(
    State(services): State<AppState>,
    request: Ruma<unstable_v1::Request>,
) -> ApiResult<unstable_v1::Response> {
    let actor = request.sender.as_ref().map(|s| s.user_id.as_ref());
    let body = &request.body;
    match body.action {
        UpdateAction::Cancel | UpdateAction::Restart | UpdateAction::Send => {}
        _ => {
            return Err(Error::invalid_param(
                "'action' is not one of 'cancel', 'restart', 'send'",
            ));
        }
    }
    act(
        &services,
        actor,
        request.client_ip,
        &body.delay_id,
        &body.action,
    )
    .await?;
    Ok(unstable_v1::Response::new().into())
}

/// `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}/{action}`: no
/// token needed (the `delay_id` is the capability; limited per client address).
pub async fn update_delayed_event_by_path(
    State(services): State<AppState>,
    request: Ruma<unstable_v2::Request>,
) -> ApiResult<unstable_v2::Response> {
    let body = &request.body;
    match body.action {
        UpdateAction::Cancel | UpdateAction::Restart | UpdateAction::Send => {}
        // Synapse serves only these three paths.
        _ => {
            return Err(Error::unrecognized(
                StatusCode::NOT_FOUND,
                "Unrecognized request",
            ));
        }
    }
    act(
        &services,
        None,
        request.client_ip,
        &body.delay_id,
        &body.action,
    )
    .await?;
    Ok(unstable_v2::Response::new().into())
}

async fn act(
    services: &AppState,
    actor: Option<&ruma::UserId>,
    address: std::net::IpAddr,
    delay_id: &str,
    action: &UpdateAction,
) -> Result<()> {
    let delayed_events = &services.delayed_events;
    match action {
        UpdateAction::Cancel => delayed_events.cancel(actor, address, delay_id).await,
        UpdateAction::Restart => delayed_events.restart(actor, address, delay_id).await,
        _ => delayed::send_now(services, actor, address, delay_id).await,
    }
}
