//! The server-server API: key publication, media, and room data for other servers.

mod keys;
mod media;
mod rooms;

use axum::Router;
use ruma::api::federation::discovery::get_server_keys;

use crate::web::{AppState, ruma::RumaRoutes};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_server_keys::v2::Request, _, _>(keys::get_server_keys)
        .merge(media::routes())
        .merge(rooms::routes())
}
