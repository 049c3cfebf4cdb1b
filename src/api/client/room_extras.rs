//! Reading around events and rooms beyond the timeline: `/context`, `/timestamp_to_event`,
//! `/relations`, `/threads`, `/search`, and room upgrades.

use axum::{Router, extract::State};
use ruma::{
    UInt,
    api::{
        Direction as ApiDirection,
        client::{
            context::get_context::v3 as get_context,
            relations::{
                get_relating_events::v1 as relating,
                get_relating_events_with_rel_type::v1 as by_rel,
                get_relating_events_with_rel_type_and_event_type::v1 as by_rel_and_type,
            },
            room::{
                get_event_by_timestamp::v1 as timestamp_to_event, upgrade_room::v3 as upgrade_room,
            },
            search::search_events::v3 as search_events,
            threads::get_threads::v1::{self as get_threads, IncludeThreads},
        },
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    services::rooms::{Direction, PaginationToken, relations::RelationsRequest},
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

/// Most events one page of `/context`, `/relations` or `/threads` returns.
const MAX_PAGE: usize = 1000;
/// Page size of `/relations` and `/threads` when the client sets none.
const DEFAULT_PAGE: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_context::Request, _, _>(get_context)
        .ruma::<timestamp_to_event::Request, _, _>(timestamp_to_event)
        .ruma::<relating::Request, _, _>(get_relating_events)
        .ruma::<by_rel::Request, _, _>(get_relating_events_with_rel_type)
        .ruma::<by_rel_and_type::Request, _, _>(get_relating_events_with_rel_type_and_event_type)
        .ruma::<get_threads::Request, _, _>(get_threads)
        .ruma::<search_events::Request, _, _>(search)
        .ruma::<upgrade_room::Request, _, _>(upgrade_room)
}

fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

fn to_raws<T>(values: Vec<Value>) -> Result<Vec<Raw<T>>> {
    values.into_iter().map(to_raw).collect()
}

fn token(token: Option<&str>) -> Result<Option<PaginationToken>> {
    token.map(str::parse::<PaginationToken>).transpose()
}

fn page_limit(limit: Option<UInt>) -> usize {
    limit
        .map_or(DEFAULT_PAGE, |l| u64::from(l) as usize)
        .clamp(1, MAX_PAGE)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=&dir=`: the room's event
/// closest to `ts` in `dir`, held here or, next to a gap in what is held, asked of the room's
/// other servers (`services::federation::timestamp`).
async fn timestamp_to_event(
    State(services): State<AppState>,
    request: Ruma<timestamp_to_event::Request>,
) -> ApiResult<timestamp_to_event::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    let (event_id, origin_server_ts) = crate::services::federation::timestamp::event_at_timestamp(
        &services,
        &body.room_id,
        user,
        body.ts,
        body.dir,
    )
    .await?;
    Ok(timestamp_to_event::Response::new(event_id, origin_server_ts).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn get_context(
    State(services): State<AppState>,
    request: Ruma<get_context::Request>,
) -> ApiResult<get_context::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let limit = (u64::from(body.limit) as usize).min(MAX_PAGE);
    let context = services
        .rooms
        .context(
            &body.room_id,
            &sender.user_id,
            Some(sender.device_id.to_string()),
            &body.event_id,
            limit,
            body.filter,
        )
        .await?;
    let mut response = get_context::Response::new();
    response.start = Some(context.start);
    response.end = Some(context.end);
    response.event = Some(to_raw(context.event)?);
    response.events_before = to_raws(context.before)?;
    response.events_after = to_raws(context.after)?;
    response.state = to_raws(context.state)?;
    Ok(response.into())
}

fn relations_request(
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&str>,
    to: Option<&str>,
    dir: ApiDirection,
    limit: Option<UInt>,
    recurse: bool,
) -> Result<RelationsRequest> {
    Ok(RelationsRequest {
        rel_type,
        event_type,
        from: token(from)?,
        to: token(to)?,
        dir: match dir {
            ApiDirection::Backward => Direction::Backward,
            ApiDirection::Forward => Direction::Forward,
        },
        limit: page_limit(limit),
        recurse,
    })
}

/// Asks the service for a `/relations` page and fills the fields all three responses share.
macro_rules! relations_page {
    ($services:expr, $request:expr, $module:ident, $rel_type:expr, $event_type:expr) => {{
        let sender = $request.sender()?;
        let body = &$request.body;
        let query = relations_request(
            $rel_type,
            $event_type,
            body.from.as_deref(),
            body.to.as_deref(),
            body.dir,
            body.limit,
            body.recurse,
        )?;
        let page = $services
            .rooms
            .relations(
                &body.room_id,
                &sender.user_id,
                Some(sender.device_id.to_string()),
                &body.event_id,
                query,
            )
            .await?;
        let mut response = $module::Response::new(to_raws(page.chunk)?);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth.map(UInt::from);
        Ok(response.into())
    }};
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn get_relating_events(
    State(services): State<AppState>,
    request: Ruma<relating::Request>,
) -> ApiResult<relating::Response> {
    relations_page!(services, request, relating, None, None)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn get_relating_events_with_rel_type(
    State(services): State<AppState>,
    request: Ruma<by_rel::Request>,
) -> ApiResult<by_rel::Response> {
    let rel_type = request.body.rel_type.to_string();
    relations_page!(services, request, by_rel, Some(rel_type), None)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn get_relating_events_with_rel_type_and_event_type(
    State(services): State<AppState>,
    request: Ruma<by_rel_and_type::Request>,
) -> ApiResult<by_rel_and_type::Response> {
    let rel_type = request.body.rel_type.to_string();
    let event_type = request.body.event_type.to_string();
    relations_page!(
        services,
        request,
        by_rel_and_type,
        Some(rel_type),
        Some(event_type)
    )
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub async fn get_threads(
    State(services): State<AppState>,
    request: Ruma<get_threads::Request>,
) -> ApiResult<get_threads::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let participated = match &body.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown include value {}",
                other.as_str()
            )));
        }
    };
    let page = services
        .rooms
        .threads(
            &body.room_id,
            &sender.user_id,
            Some(sender.device_id.to_string()),
            participated,
            token(body.from.as_deref())?,
            page_limit(body.limit),
        )
        .await?;
    let mut response = get_threads::Response::new(to_raws(page.chunk)?);
    response.next_batch = page.next_batch;
    Ok(response.into())
}

/// `POST /_matrix/client/v3/search`
pub async fn search(
    State(services): State<AppState>,
    request: Ruma<search_events::Request>,
) -> ApiResult<search_events::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let mut categories = search_events::ResultCategories::new();
    if let Some(criteria) = body.search_categories.room_events {
        categories.room_events = services
            .rooms
            .search_room_events(
                &sender.user_id,
                Some(sender.device_id.to_string()),
                criteria,
                body.next_batch,
            )
            .await?;
    }
    Ok(search_events::Response::new(categories).into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade_room(
    State(services): State<AppState>,
    request: Ruma<upgrade_room::Request>,
) -> ApiResult<upgrade_room::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let replacement = services
        .rooms
        .upgrade_room(
            &body.room_id,
            &sender.user_id,
            &body.new_version,
            body.additional_creators.clone(),
        )
        .await?;
    Ok(upgrade_room::Response::new(replacement).into())
}
