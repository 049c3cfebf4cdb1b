//! `/.well-known/matrix/{server,client,support}`, generated from the config on every request,
//! so they can never go stale. CORS (`Access-Control-Allow-Origin: *`) comes from the router.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::{
    OwnedServerName, OwnedUserId,
    api::{
        client::discovery::{discover_homeserver, discover_support},
        federation::discovery::discover_homeserver as discover_server,
    },
};

use crate::{
    error::Error,
    net::certificates::host_of_url,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .ruma::<discover_server::Request, _, _>(server)
        .ruma::<discover_support::Request, _, _>(support)
        // Not through ruma's response type: `extra_well_known_client_content` adds keys it
        // does not know.
        .route("/.well-known/matrix/client", axum::routing::get(client))
}

/// The URL clients use: `public_baseurl`, or `https://<server_name>/`.
pub fn public_baseurl(config: &crate::config::Config) -> String {
    match &config.public_baseurl {
        Some(url) => url.clone(),
        None => format!("https://{}/", config.server_name),
    }
}

/// `GET /.well-known/matrix/server`: federation goes to `public_baseurl`'s host.
async fn server(
    State(state): State<AppState>,
    _: Ruma<discover_server::Request>,
) -> ApiResult<discover_server::Response> {
    if !state.config.serve_server_wellknown {
        return Err(Error::not_found("serve_server_wellknown is off"));
    }
    if !state.config.federation_enabled() {
        return Err(Error::not_found("Federation is off on this server"));
    }
    let server = OwnedServerName::try_from(delegated_server(&state.config))
        .map_err(|e| Error::internal(format!("public_baseurl has no valid host: {e}")))?;
    Ok(discover_server::Response::new(server).into())
}

/// Where a delegated server name sends other servers (`m.server`): `public_baseurl`'s host and
/// the port that serves federation ([`crate::config::Config::federation_public_port`]).
pub fn delegated_server(config: &crate::config::Config) -> String {
    let host = host_of_url(&public_baseurl(config));
    let port = config.federation_public_port();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `GET /.well-known/matrix/client`: ruma's body (`m.homeserver.base_url`) plus the configured
/// extra keys, which never override it.
async fn client(State(state): State<AppState>) -> Response {
    let response = discover_homeserver::Response::new(discover_homeserver::HomeserverInfo::new(
        public_baseurl(&state.config)
            .trim_end_matches('/')
            .to_owned(),
    ));
    let body = ruma::api::OutgoingResponseExt::try_into_http_response::<Vec<u8>>(response)
        .ok()
        .and_then(|http| serde_json::from_slice::<serde_json::Map<_, _>>(http.body()).ok());
    let Some(mut body) = body else {
        return Error::internal("cannot render the well-known client body").into_response();
    };
    for (key, value) in &state.config.extra_well_known_client_content {
        body.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Json(body).into_response()
}

/// `GET /.well-known/matrix/support`: `admin_contact` as an e-mail address (`mailto:`) or a
/// Matrix ID; 404 when none is configured, as the spec asks.
async fn support(
    State(state): State<AppState>,
    _: Ruma<discover_support::Request>,
) -> ApiResult<discover_support::Response> {
    let Some(contact) = &state.config.admin_contact else {
        return Err(Error::unrecognized(
            StatusCode::NOT_FOUND,
            "No support information",
        ));
    };
    let role = discover_support::ContactRole::Admin;
    let contact = if let Ok(user) = OwnedUserId::try_from(contact.as_str()) {
        discover_support::Contact::with_matrix_id(role, user)
    } else {
        let email = contact.strip_prefix("mailto:").unwrap_or(contact);
        discover_support::Contact::with_email_address(role, email.to_owned())
    };
    Ok(discover_support::Response::with_contacts(vec![contact]).into())
}
