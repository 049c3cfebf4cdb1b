//! The server-server API. Key publication and media for now; federation grows here.

mod keys;
mod media;

use axum::Router;
use ruma::api::federation::discovery::get_server_keys;

use crate::web::{AppState, ruma::RumaRoutes};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_server_keys::v2::Request, _, _>(keys::get_server_keys)
        .merge(media::routes())
}
