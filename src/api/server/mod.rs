//! The server-server API: keys (own and as a notary), queries, room data for other servers,
//! transactions, joins and our users' devices and E2EE keys.

mod keys;
mod media;
mod membership;
mod query;
mod rooms;
mod transactions;
mod user_keys;

use axum::Router;
use ruma::api::federation::{
    discovery::{
        get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version,
    },
    openid::get_openid_userinfo,
    query::{get_profile_information, get_room_information},
};

use crate::web::{AppState, ruma::RumaRoutes};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_server_keys::v2::Request, _, _>(keys::get_server_keys)
        .ruma::<get_remote_server_keys_batch::v2::Request, _, _>(keys::query_keys)
        .ruma::<get_remote_server_keys::v2::Request, _, _>(keys::query_server_keys)
        .ruma::<get_server_version::v1::Request, _, _>(query::version)
        .ruma::<get_room_information::v1::Request, _, _>(query::directory)
        .ruma::<get_profile_information::v1::Request, _, _>(query::profile)
        .ruma::<get_openid_userinfo::v1::Request, _, _>(query::openid_userinfo)
        .merge(media::routes())
        .merge(rooms::routes())
        .merge(transactions::routes())
        .merge(membership::routes())
        .merge(user_keys::routes())
}
