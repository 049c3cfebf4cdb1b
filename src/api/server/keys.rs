//! Signing keys: this server's own (`/_matrix/key/v2/server`) and, as a notary, other
//! servers' (`/_matrix/key/v2/query`), each answer additionally signed by this server.

use axum::extract::State;
use futures_util::future::join_all;
use ruma::{
    CanonicalJsonObject, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys::v2 as query_one,
        get_remote_server_keys_batch::v2 as query_batch, get_server_keys::v2 as get_server_keys,
    },
    serde::Raw,
};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::now_ms,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// The most servers one notary query may name: each may cost a fetch.
const MAX_SERVERS_PER_QUERY: usize = 20;

/// `GET /_matrix/key/v2/server`: this server's signing key, signed by itself.
pub async fn get_server_keys(
    State(services): State<AppState>,
    _: Ruma<get_server_keys::Request>,
) -> ApiResult<get_server_keys::Response> {
    let signed = services
        .server_key
        .signed_server_keys()
        .map_err(Error::internal)?;
    Ok(get_server_keys::Response::new(signed).into())
}

/// `POST /_matrix/key/v2/query`
pub async fn query_keys(
    State(services): State<AppState>,
    request: Ruma<query_batch::Request>,
) -> ApiResult<query_batch::Response> {
    let wanted = &request.body.server_keys;
    if wanted.len() > MAX_SERVERS_PER_QUERY {
        return Err(Error::invalid_param(format!(
            "At most {MAX_SERVERS_PER_QUERY} servers per query"
        )));
    }
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let answers = join_all(wanted.iter().map(|(server, criteria)| {
        let key_ids: Vec<String> = criteria.keys().map(ToString::to_string).collect();
        // The latest time asked for; the notary's now when none is.
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.0))
            .max()
            .unwrap_or(now);
        notarised_keys(&services, server, key_ids, minimum)
    }))
    .await;
    let mut server_keys = Vec::new();
    for answer in answers {
        server_keys.extend(answer?);
    }
    Ok(query_batch::Response::new(server_keys).into())
}

/// `GET /_matrix/key/v2/query/{serverName}`
pub async fn query_server_keys(
    State(services): State<AppState>,
    request: Ruma<query_one::Request>,
) -> ApiResult<query_one::Response> {
    let body = &request.body;
    let minimum = u64::from(body.minimum_valid_until_ts.0);
    let server_keys = notarised_keys(&services, &body.server_name, Vec::new(), minimum).await?;
    Ok(query_one::Response::new(server_keys).into())
}

/// The key answers of `server` (this server's own, or those fetched from or for another),
/// signed by this server as well.
async fn notarised_keys(
    services: &Services,
    server: &ServerName,
    key_ids: Vec<String>,
    minimum_valid_until_ts: u64,
) -> Result<Vec<Raw<ServerSigningKeys>>> {
    if server == services.server_name {
        return Ok(vec![
            services
                .server_key
                .signed_server_keys()
                .map_err(Error::internal)?,
        ]);
    }
    let objects = services
        .server_keys
        .key_objects_for_notary(server, &key_ids, minimum_valid_until_ts)
        .await?;
    objects
        .into_iter()
        .map(|mut object: CanonicalJsonObject| {
            services
                .server_key
                .sign_json(&mut object)
                .map_err(Error::internal)?;
            let json = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
            Ok(Raw::from_json(json))
        })
        .collect()
}
