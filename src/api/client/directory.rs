//! Room aliases, the public room directory and the user directory.

use axum::{
    Router,
    extract::{Path, State},
};
use ruma::{
    OwnedRoomId, UInt,
    api::client::{
        alias::{
            create_alias::v3 as create_alias, delete_alias::v3 as delete_alias,
            get_alias::v3 as get_alias,
        },
        appservice::set_room_visibility::v3 as set_appservice_listed,
        directory::{
            get_public_rooms::v3 as get_public_rooms,
            get_public_rooms_filtered::v3 as get_public_rooms_filtered,
            get_room_visibility::v3 as get_room_visibility,
            set_room_visibility::v3 as set_room_visibility,
        },
        room::{Visibility, aliases::v3 as room_aliases, get_summary::v1 as get_summary},
        space::get_hierarchy::v1 as get_hierarchy,
        user_directory::search_users::v3 as search_users,
    },
};

use crate::{
    error::{Error, Result},
    services::{directory::PublicRoomsQuery, sessions::Identity},
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes, authenticate_parts},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<create_alias::Request, _, _>(create_alias)
        .ruma::<get_alias::Request, _, _>(get_alias)
        .ruma::<delete_alias::Request, _, _>(delete_alias)
        .ruma::<room_aliases::Request, _, _>(room_aliases)
        .ruma::<get_public_rooms::Request, _, _>(get_public_rooms)
        .ruma::<get_public_rooms_filtered::Request, _, _>(get_public_rooms_filtered)
        .ruma::<get_room_visibility::Request, _, _>(get_room_visibility)
        .ruma::<set_room_visibility::Request, _, _>(set_room_visibility)
        .ruma::<search_users::Request, _, _>(search_users)
        .ruma::<set_appservice_listed::Request, _, _>(set_appservice_listed)
        // The `DELETE` Synapse serves beside the spec's `PUT` (ruma has no type for it).
        .route(
            "/_matrix/client/r0/directory/list/appservice/{network_id}/{room_id}",
            axum::routing::delete(unset_appservice_listed),
        )
        .route(
            "/_matrix/client/v3/directory/list/appservice/{network_id}/{room_id}",
            axum::routing::delete(unset_appservice_listed),
        )
        .ruma::<get_summary::Request, _, _>(room_summary)
        .ruma::<get_hierarchy::Request, _, _>(hierarchy)
        // MSC3266's own unstable path, which Synapse serves and ruma does not list (ruma's
        // unstable path, `…/rooms/{roomIdOrAlias}/summary`, comes with the line above).
        .route(
            "/_matrix/client/unstable/im.nheko.summary/summary/{room_id_or_alias}",
            axum::routing::get(room_summary),
        )
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (MSC3266), also without a token.
async fn room_summary(
    State(services): State<AppState>,
    request: Ruma<get_summary::Request>,
) -> ApiResult<get_summary::Response> {
    let user = request.sender.as_ref().map(|s| s.user_id.as_ref());
    let (summary, membership) = services
        .directory
        .room_summary(&request.body.room_id_or_alias, &request.body.via, user)
        .await?;
    let mut response = get_summary::Response::new(summary);
    response.membership = membership;
    Ok(response.into())
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: a space and the rooms it links to.
async fn hierarchy(
    State(services): State<AppState>,
    request: Ruma<get_hierarchy::Request>,
) -> ApiResult<get_hierarchy::Response> {
    let body = &request.body;
    let response = services
        .directory
        .client_hierarchy(
            &request.sender()?.user_id,
            &body.room_id,
            body.from.as_deref(),
            body.limit,
            body.max_depth,
            body.suggested_only,
        )
        .await?;
    Ok(response.into())
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn create_alias(
    State(services): State<AppState>,
    request: Ruma<create_alias::Request>,
) -> ApiResult<create_alias::Response> {
    let body = &request.body;
    let sender = request.sender()?;
    services
        .appservices
        .check_alias_not_exclusive_for(&body.room_alias, sender)?;
    services
        .directory
        .create_alias(&body.room_alias, &body.room_id, &sender.user_id)
        .await?;
    Ok(create_alias::Response::new().into())
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn get_alias(
    State(services): State<AppState>,
    request: Ruma<get_alias::Request>,
) -> ApiResult<get_alias::Response> {
    let (room_id, servers) =
        crate::services::appservice::resolve_alias(&services, &request.body.room_alias).await?;
    Ok(get_alias::Response::new(room_id, servers).into())
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn delete_alias(
    State(services): State<AppState>,
    request: Ruma<delete_alias::Request>,
) -> ApiResult<delete_alias::Response> {
    services
        .directory
        .delete_alias(
            &services.rooms,
            &request.body.room_alias,
            &request.sender()?.user_id,
        )
        .await?;
    Ok(delete_alias::Response::new().into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(
    State(services): State<AppState>,
    request: Ruma<room_aliases::Request>,
) -> ApiResult<room_aliases::Response> {
    let aliases = services
        .directory
        .room_aliases(&request.body.room_id, &request.sender()?.user_id)
        .await?;
    Ok(room_aliases::Response::new(aliases).into())
}

/// `GET /_matrix/client/v3/publicRooms`
async fn get_public_rooms(
    State(services): State<AppState>,
    request: Ruma<get_public_rooms::Request>,
) -> ApiResult<get_public_rooms::Response> {
    let body = &request.body;
    let page = services
        .directory
        .public_rooms(PublicRoomsQuery {
            server: body.server.as_deref(),
            limit: body.limit,
            since: body.since.as_deref(),
            filter: None,
            network: None,
        })
        .await?;
    let mut response = get_public_rooms::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total_room_count_estimate);
    Ok(response.into())
}

/// `POST /_matrix/client/v3/publicRooms`
async fn get_public_rooms_filtered(
    State(services): State<AppState>,
    request: Ruma<get_public_rooms_filtered::Request>,
) -> ApiResult<get_public_rooms_filtered::Response> {
    let body = &request.body;
    let page = services
        .directory
        .public_rooms(PublicRoomsQuery {
            server: body.server.as_deref(),
            limit: body.limit,
            since: body.since.as_deref(),
            filter: Some(&body.filter),
            network: Some(&body.room_network),
        })
        .await?;
    let mut response = get_public_rooms_filtered::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total_room_count_estimate);
    Ok(response.into())
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn get_room_visibility(
    State(services): State<AppState>,
    request: Ruma<get_room_visibility::Request>,
) -> ApiResult<get_room_visibility::Response> {
    let published = services
        .directory
        .is_published(&request.body.room_id)
        .await?;
    let visibility = if published {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::Response::new(visibility).into())
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn set_room_visibility(
    State(services): State<AppState>,
    request: Ruma<set_room_visibility::Request>,
) -> ApiResult<set_room_visibility::Response> {
    let body = &request.body;
    let published = is_public(&body.visibility)?;
    services
        .directory
        .set_published(&body.room_id, &request.sender()?.user_id, published)
        .await?;
    Ok(set_room_visibility::Response::new().into())
}

/// `POST /_matrix/client/v3/user_directory/search`
async fn search_users(
    State(services): State<AppState>,
    request: Ruma<search_users::Request>,
) -> ApiResult<search_users::Response> {
    let body = &request.body;
    let (found, limited) = services
        .directory
        .search_users(&request.sender()?.user_id, &body.search_term, body.limit)
        .await?;
    let results = found
        .into_iter()
        .map(|user| {
            let mut result = search_users::User::new(user.user_id);
            result.display_name = user.display_name;
            result.avatar_url = user.avatar_url;
            result
        })
        .collect();
    Ok(search_users::Response::new(results, limited).into())
}

/// `public` or `private`, the two visibilities a room list knows.
fn is_public(visibility: &Visibility) -> Result<bool> {
    match visibility {
        Visibility::Public => Ok(true),
        Visibility::Private => Ok(false),
        other => Err(Error::invalid_param(format!(
            "Unknown visibility `{}`: use `public` or `private`",
            other.as_str()
        ))),
    }
}

/// The application service a request was made as: only services edit their room lists.
fn only_appservice(sender: &Identity) -> Result<&str> {
    sender.appservice.as_deref().ok_or_else(|| {
        Error::forbidden("Only appservices can edit the appservice published room list")
    })
}

/// `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: the service lists
/// the room in its list of the network (`visibility: private` takes it off).
async fn set_appservice_listed(
    State(services): State<AppState>,
    request: Ruma<set_appservice_listed::Request>,
) -> ApiResult<set_appservice_listed::Response> {
    let appservice = only_appservice(request.sender()?)?;
    let body = &request.body;
    let listed = is_public(&body.visibility)?;
    services
        .directory
        .set_appservice_listed(appservice, &body.network_id, &body.room_id, listed)
        .await?;
    Ok(set_appservice_listed::Response::new().into())
}

/// `DELETE /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: Synapse's way
/// to take a room off a service's list.
async fn unset_appservice_listed(
    State(services): State<AppState>,
    Path((network_id, room_id)): Path<(String, String)>,
    parts: http::request::Parts,
) -> Result<axum::Json<serde_json::Value>> {
    let sender = authenticate_parts(&services, &parts).await?;
    let appservice = only_appservice(&sender)?;
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
    services
        .directory
        .set_appservice_listed(appservice, &network_id, &room_id, false)
        .await?;
    Ok(axum::Json(serde_json::json!({})))
}
