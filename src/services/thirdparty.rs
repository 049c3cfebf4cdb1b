//! Third-party networks (IRC, Slack, … behind bridges). A protocol comes from the application
//! services whose registration lists it in `protocols`; the client API
//! (`api/client/thirdparty.rs`) asks these functions, which ask the services
//! (`GET {url}/_matrix/app/v1/thirdparty/…` with the `hs_token`) and merge their answers as
//! Synapse does (`handlers/appservice.py`):
//! * a protocol's metadata is the first service's answer, with the `instances` of every service
//!   that has the protocol, each given `instance_id` `{service id}|{network_id}` (what
//!   `/publicRooms` takes as `third_party_instance_id`); answers are kept an hour;
//! * users and locations are the valid results of every service with the protocol, asked at the
//!   same time; a service that fails or answers something invalid adds nothing;
//! * lookups by Matrix user ID or alias ask the services whose namespace holds it.
//!
//! Without a service that has the protocol every lookup finds nothing (the API answers the
//! spec's `404`).

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use futures_util::future::join_all;
use ruma::{
    RoomAliasId, UserId,
    api::{OutgoingRequest, appservice::HomeserverToken, path_builder::SinglePath},
    thirdparty::{Location, Protocol, ProtocolInstance, User},
};
use serde::de::DeserializeOwned;

use crate::services::appservice::{AppService, AppServices, PROTOCOL_TTL, QUERY_TIMEOUT};

/// Whether the service declares `protocol` in its registration.
fn has_protocol(service: &AppService, protocol: &str) -> bool {
    service
        .registration
        .protocols
        .as_ref()
        .is_some_and(|protocols| protocols.iter().any(|p| p == protocol))
}

/// The protocols the services offer, by name (`GET /thirdparty/protocols`), or only `only`
/// (`GET /thirdparty/protocol/{protocol}`). A protocol no service could describe is left out.
pub async fn protocols(
    appservices: &AppServices,
    only: Option<&str>,
) -> BTreeMap<String, Protocol> {
    let mut found: BTreeMap<String, Protocol> = BTreeMap::new();
    for service in appservices.all() {
        for name in service.registration.protocols.iter().flatten() {
            if only.is_some_and(|only| only != name) {
                continue;
            }
            let Some(info) = protocol_of(appservices, service, name).await else {
                continue;
            };
            match found.get_mut(name) {
                // The other fields come from the first service: they ought to be the same.
                Some(merged) => merged.instances.extend(info.instances),
                None => {
                    found.insert(name.clone(), info);
                }
            }
        }
    }
    found
}

/// One service's metadata of `protocol`, from the cache or asked of it.
async fn protocol_of(
    appservices: &AppServices,
    service: &Arc<AppService>,
    protocol: &str,
) -> Option<Protocol> {
    use ruma::api::appservice::thirdparty::get_protocol::v1 as get_protocol;
    let key = (service.registration.id.clone(), protocol.to_owned());
    if let Some((at, info)) = appservices.protocols.lock().ok()?.get(&key)
        && at.elapsed() < PROTOCOL_TTL
    {
        return Some(info.clone());
    }
    let request = get_protocol::Request::new(protocol.to_owned());
    let info: get_protocol::AppserviceProtocol = ask(appservices, service, request).await?;
    let mut info: Protocol = info.into::<ProtocolInstance>();
    for instance in &mut info.instances {
        instance.instance_id = Some(format!(
            "{}|{}",
            service.registration.id, instance.network_id
        ));
    }
    if let Ok(mut cache) = appservices.protocols.lock() {
        cache.insert(key, (Instant::now(), info.clone()));
    }
    Some(info)
}

/// Users of `protocol` matching the protocol's lookup `fields`.
pub async fn users(
    appservices: &AppServices,
    protocol: &str,
    fields: &BTreeMap<String, String>,
) -> Vec<User> {
    use ruma::api::appservice::thirdparty::get_user_for_protocol::v1 as query;
    ask_every_service_of(appservices, protocol, || {
        let mut request = query::Request::new(protocol.to_owned());
        request.fields = fields.clone();
        request
    })
    .await
}

/// Portal rooms of `protocol` matching the protocol's lookup `fields`.
pub async fn locations(
    appservices: &AppServices,
    protocol: &str,
    fields: &BTreeMap<String, String>,
) -> Vec<Location> {
    use ruma::api::appservice::thirdparty::get_location_for_protocol::v1 as query;
    ask_every_service_of(appservices, protocol, || {
        let mut request = query::Request::new(protocol.to_owned());
        request.fields = fields.clone();
        request
    })
    .await
}

/// The valid answers of every service that offers `protocol` to the request `make` builds,
/// asked at once.
async fn ask_every_service_of<R, T>(
    appservices: &AppServices,
    protocol: &str,
    make: impl Fn() -> R,
) -> Vec<T>
where
    R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
    T: DeserializeOwned,
{
    let asked = appservices
        .all()
        .iter()
        .filter(|service| has_protocol(service, protocol))
        .map(|service| ask_list(appservices, service, make()));
    join_all(asked).await.into_iter().flatten().collect()
}

/// The third-party users a bridge's Matrix user stands for: asked of the services whose user
/// namespace holds it.
pub async fn users_for_matrix_id(appservices: &AppServices, user_id: &UserId) -> Vec<User> {
    use ruma::api::appservice::thirdparty::get_user_for_user_id::v1 as query;
    let asked = appservices
        .all()
        .iter()
        .filter(|service| service.is_interested_in_user(user_id.as_str()))
        .map(|service| {
            ask_list(
                appservices,
                service,
                query::Request::new(user_id.to_owned()),
            )
        });
    join_all(asked).await.into_iter().flatten().collect()
}

/// The third-party locations a portal room alias stands for: asked of the services whose alias
/// namespace holds it.
pub async fn locations_for_alias(appservices: &AppServices, alias: &RoomAliasId) -> Vec<Location> {
    use ruma::api::appservice::thirdparty::get_location_for_room_alias::v1 as query;
    let asked = appservices
        .all()
        .iter()
        .filter(|service| service.is_interested_in_alias(alias.as_str()))
        .map(|service| ask_list(appservices, service, query::Request::new(alias.to_owned())));
    join_all(asked).await.into_iter().flatten().collect()
}

/// Asks a service; its answer's JSON when it answered `200` with it, else `None` (logged).
async fn ask<R, T>(appservices: &AppServices, service: &AppService, request: R) -> Option<T>
where
    R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
    T: DeserializeOwned,
{
    let id = &service.registration.id;
    let response = match appservices.call(service, request, QUERY_TIMEOUT).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(appservice = %id, error = %e, "third-party lookup failed");
            return None;
        }
    };
    if !response.status.is_success() {
        tracing::info!(appservice = %id, status = %response.status, "third-party lookup refused");
        return None;
    }
    serde_json::from_slice(&response.body)
        .inspect_err(|e| tracing::warn!(appservice = %id, "invalid third-party answer: {e}"))
        .ok()
}

/// [`ask`] for a list of results, keeping the valid ones (as Synapse, which drops each result
/// that lacks its fields).
async fn ask_list<R, T>(appservices: &AppServices, service: &AppService, request: R) -> Vec<T>
where
    R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
    T: DeserializeOwned,
{
    let list: Vec<serde_json::Value> = ask(appservices, service, request).await.unwrap_or_default();
    list.into_iter()
        .filter_map(|item| {
            serde_json::from_value(item)
                .inspect_err(|e| {
                    tracing::warn!(appservice = %service.registration.id, "invalid result: {e}");
                })
                .ok()
        })
        .collect()
}
