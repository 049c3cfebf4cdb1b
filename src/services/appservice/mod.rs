//! Application services (bridges): their registrations, requests made as them, and the events
//! pushed to them.
//!
//! Registrations are Synapse's YAML files, named by `app_service_config_files` and read once at
//! start ([`AppServices::load`]); a file that cannot be used stops the start with the file, the
//! key and why. Their namespaces are compiled once. A request whose token is a service's
//! `as_token` acts as the service's sender, or as the user named by its `user_id` query parameter
//! when that user is in the service's user namespace ([`AppServices::identity`]). Events are
//! pushed by [`sender`], a task per service that follows the stream with a stored cursor.
//!
//! Every request to a service (transactions, queries, pings, the third-party lookups of
//! `services/thirdparty.rs`) goes through the one outbound HTTP client
//! ([`FederationClient::send_to_service`]): `http` or `https`, no IP policy (the admin
//! configured the URL), answers read up to [`ANSWER_MAX_BYTES`], each request within its timeout.

pub mod sender;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use regex::Regex;
use ruma::{
    OwnedUserId, RoomAliasId, ServerName, UserId,
    api::{
        OutgoingRequest, OutgoingRequestExt,
        appservice::{HomeserverToken, Registration},
        error::ErrorKind,
        path_builder::SinglePath,
    },
};

use crate::{
    error::{Error, Result},
    services::{
        federation::client::{FederationClient, RawResponse},
        sessions::Identity,
    },
};

/// One namespace regex and whether it is exclusive.
#[derive(Debug)]
struct Namespace {
    regex: Regex,
    exclusive: bool,
}

/// One registered application service.
#[derive(Debug)]
pub struct AppService {
    pub registration: Registration,
    /// The file it was read from, for messages.
    pub file: PathBuf,
    /// `@sender_localpart:server_name`: who the service is when it names no `user_id`.
    pub sender: OwnedUserId,
    /// MSC2409: ephemeral events (typing, receipts, presence) and the to-device messages of its
    /// users pushed in transactions.
    pub push_ephemeral: bool,
    /// MSC3202 (`org.matrix.msc3202: true`): device list changes, one-time key counts and unused
    /// fallback key types pushed in transactions, for bridges that encrypt.
    pub msc3202: bool,
    users: Vec<Namespace>,
    aliases: Vec<Namespace>,
    rooms: Vec<Namespace>,
}

fn matches(namespaces: &[Namespace], value: &str, exclusive_only: bool) -> bool {
    namespaces
        .iter()
        .any(|n| (n.exclusive || !exclusive_only) && n.regex.is_match(value))
}

impl AppService {
    /// Whether the user is the sender or in the user namespaces.
    pub fn is_interested_in_user(&self, user: &str) -> bool {
        user == self.sender.as_str() || matches(&self.users, user, false)
    }

    /// Whether the alias is in the alias namespaces.
    pub fn is_interested_in_alias(&self, alias: &str) -> bool {
        matches(&self.aliases, alias, false)
    }

    /// Whether the room ID is in the room namespaces.
    pub fn is_interested_in_room(&self, room: &str) -> bool {
        matches(&self.rooms, room, false)
    }

    /// Whether the service does not want rate limits on its users (`rate_limited: false`).
    pub fn unlimited(&self) -> bool {
        self.registration.rate_limited == Some(false)
    }
}

/// Every registered application service.
#[derive(Default)]
pub struct AppServices {
    services: Vec<Arc<AppService>>,
    /// The outbound client the requests to the services go through; `None` in the copies the
    /// CLI loads, which send nothing.
    client: Option<Arc<FederationClient>>,
    /// The protocol metadata services answered, by (service ID, protocol), kept for
    /// [`PROTOCOL_TTL`] as Synapse does (`protocol_meta_cache`): clients ask for it each time
    /// they open the room directory.
    pub(crate) protocols: Mutex<HashMap<(String, String), (Instant, ruma::thirdparty::Protocol)>>,
}

impl std::fmt::Debug for AppServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServices")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// How long a query, a ping or a third-party lookup may take.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of a failed ping's answer passed on in `M_BAD_STATUS`.
const PING_BODY_LIMIT: usize = 64 * 1024;
/// The most of a service's answer that is read (a longer one is a failure).
pub(crate) const ANSWER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// How long a service's protocol metadata is kept.
pub(crate) const PROTOCOL_TTL: Duration = Duration::from_secs(3600);

/// Why a request to a service got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// No answer within the request's timeout (a ping's `M_CONNECTION_TIMEOUT`).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection, TLS or HTTP failure, an answer too large, or no URL.
    #[error("{0}")]
    Failed(String),
}

/// The `http::Request` of a request to `service` (`url` + path, the `hs_token` as a bearer
/// token, as Synapse sends it).
pub(crate) fn service_request<R>(
    service: &AppService,
    request: R,
) -> Result<http::Request<Vec<u8>>, Unanswered>
where
    R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
{
    let url = service
        .registration
        .url
        .as_deref()
        .ok_or_else(|| Unanswered::Failed("the service has no url".into()))?;
    request
        .try_into_http_request::<Vec<u8>>(
            url.trim_end_matches('/'),
            &service.registration.hs_token,
            (),
        )
        .map_err(|e| Unanswered::Failed(format!("cannot make the request: {e}")))
}

/// Sends a request made by [`service_request`] through the outbound client, within
/// `timeout`; the answer whatever its status.
pub(crate) async fn exchange(
    client: &FederationClient,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
) -> Result<RawResponse, Unanswered> {
    match tokio::time::timeout(timeout, client.send_to_service(request, ANSWER_MAX_BYTES)).await {
        Err(_) => Err(Unanswered::Timeout(timeout)),
        Ok(Err(e)) => Err(Unanswered::Failed(e.to_string())),
        Ok(Ok(response)) => Ok(response),
    }
}

/// A key of a registration file that cannot be used: the key and why.
type Invalid = (String, String);

impl AppServices {
    /// Reads the registration files of `app_service_config_files`. Any file that cannot be used
    /// is an error naming the file, the key and why.
    pub fn load(files: &[PathBuf], server_name: &ServerName) -> anyhow::Result<Self> {
        let mut services: Vec<Arc<AppService>> = Vec::new();
        for file in files {
            let fail = |(key, why): Invalid| {
                anyhow::anyhow!(
                    "app_service_config_files: {}: `{key}`: {why}",
                    file.display()
                )
            };
            let service = read_registration(file, server_name).map_err(fail)?;
            let registration = &service.registration;
            for other in &services {
                if other.registration.id == registration.id {
                    return Err(fail((
                        "id".into(),
                        format!(
                            "`{}` is also the ID of {}",
                            registration.id,
                            other.file.display()
                        ),
                    )));
                }
                if other.registration.as_token == registration.as_token {
                    return Err(fail((
                        "as_token".into(),
                        format!("the same as_token as {}", other.file.display()),
                    )));
                }
            }
            services.push(Arc::new(service));
        }
        Ok(Self {
            services,
            ..Self::default()
        })
    }

    /// The services, sending their requests through `client`.
    pub fn with_client(mut self, client: Arc<FederationClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// Sends `request` to `service` within `timeout`: the answer whatever its status.
    pub(crate) async fn call<R>(
        &self,
        service: &AppService,
        request: R,
        timeout: Duration,
    ) -> Result<RawResponse, Unanswered>
    where
        R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
    {
        let client = self
            .client
            .as_deref()
            .ok_or_else(|| Unanswered::Failed("no HTTP client in this process".into()))?;
        exchange(client, service_request(service, request)?, timeout).await
    }

    /// Asks the services whose user namespace holds `user` (a user of this server that does not
    /// exist) whether it exists for them: a bridge creates its ghost when asked. Whether one
    /// answered `200` (the caller then looks again).
    pub async fn query_user(&self, user: &UserId) -> bool {
        use ruma::api::appservice::query::query_user_id::v1 as query;
        for service in &self.services {
            if service.is_interested_in_user(user.as_str())
                && self
                    .query(service, query::Request::new(user.to_owned()))
                    .await
            {
                return true;
            }
        }
        false
    }

    /// As [`Self::query_user`] for an alias of this server that is not known: a bridge creates
    /// the room (a portal) when asked.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        use ruma::api::appservice::query::query_room_alias::v1 as query;
        for service in &self.services {
            if service.is_interested_in_alias(alias.as_str())
                && self
                    .query(service, query::Request::new(alias.to_owned()))
                    .await
            {
                return true;
            }
        }
        false
    }

    /// Sends a query to a service (bounded by [`QUERY_TIMEOUT`]); whether it answered `200`.
    async fn query<R>(&self, service: &AppService, request: R) -> bool
    where
        R: OutgoingRequest<PathBuilder = SinglePath, Authentication = HomeserverToken>,
    {
        if service.registration.url.is_none() {
            return false;
        }
        match self.call(service, request, QUERY_TIMEOUT).await {
            Ok(response) => response.status.is_success(),
            Err(e) => {
                tracing::warn!(appservice = %service.registration.id, error = %e, "query failed");
                false
            }
        }
    }

    /// `POST /appservice/{appserviceId}/ping`: `POST {url}/_matrix/app/v1/ping` with the
    /// `hs_token`; how long it took, or the spec's error (`M_URL_NOT_SET`,
    /// `M_CONNECTION_TIMEOUT`, `M_CONNECTION_FAILED`, `M_BAD_STATUS`). `by` is the service whose
    /// token the request carried: a service pings only itself.
    pub async fn ping(
        &self,
        by: Option<&str>,
        id: &str,
        transaction_id: Option<ruma::OwnedTransactionId>,
    ) -> Result<std::time::Duration> {
        use ruma::api::{appservice::ping::send_ping::v1 as send_ping, error::BadStatusErrorData};
        let service = match self.by_id(id) {
            Some(service) if by == Some(id) => service,
            _ => {
                return Err(Error::forbidden(
                    "Provided access token is not for this appservice",
                ));
            }
        };
        if service.registration.url.is_none() {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UrlNotSet,
                "Application service has no URL",
            ));
        }
        let mut request = send_ping::Request::new();
        request.transaction_id = transaction_id;
        let started = Instant::now();
        let response = match self.call(service, request, QUERY_TIMEOUT).await {
            Ok(response) => response,
            Err(Unanswered::Timeout(_)) => {
                return Err(Error::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::ConnectionTimeout,
                    "Connection to application service timed out",
                ));
            }
            Err(Unanswered::Failed(e)) => {
                return Err(Error::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::ConnectionFailed,
                    format!("Connection to application service failed: {e}"),
                ));
            }
        };
        let duration = started.elapsed();
        if response.status.is_success() {
            return Ok(duration);
        }
        let mut data = BadStatusErrorData::new();
        data.status = Some(response.status);
        let body = &response.body[..response.body.len().min(PING_BODY_LIMIT)];
        data.body = Some(String::from_utf8_lossy(body).into_owned());
        Err(Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::BadStatus(data),
            "Ping returned error status",
        ))
    }

    pub fn all(&self) -> &[Arc<AppService>] {
        &self.services
    }

    /// The service whose `as_token` this is.
    pub fn by_as_token(&self, token: &str) -> Option<&Arc<AppService>> {
        // Tokens are compared in constant time: a timing difference must not reveal them.
        self.services.iter().find(|s| {
            let known = s.registration.as_token.as_bytes();
            known.len() == token.len()
                && known
                    .iter()
                    .zip(token.as_bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|s| s.registration.id == id)
    }

    /// `400 M_EXCLUSIVE` when the user ID is in another party's exclusive namespace: `by` is the
    /// service asking, if any.
    pub fn check_user_not_exclusive(&self, user: &UserId, by: Option<&AppService>) -> Result<()> {
        let taken = self.services.iter().any(|s| {
            by.is_none_or(|by| by.registration.id != s.registration.id)
                && (matches(&s.users, user.as_str(), true) || s.sender == user)
        });
        if taken {
            return Err(exclusive(
                "This user ID is reserved by an application service",
            ));
        }
        Ok(())
    }

    /// `400 M_EXCLUSIVE` when the alias is in an exclusive namespace of another party.
    pub fn check_alias_not_exclusive(
        &self,
        alias: &RoomAliasId,
        by: Option<&AppService>,
    ) -> Result<()> {
        let taken = self.services.iter().any(|s| {
            by.is_none_or(|by| by.registration.id != s.registration.id)
                && matches(&s.aliases, alias.as_str(), true)
        });
        if taken {
            return Err(exclusive(
                "This alias is reserved by an application service",
            ));
        }
        Ok(())
    }

    /// [`Self::check_alias_not_exclusive`] for the sender of a request.
    pub fn check_alias_not_exclusive_for(
        &self,
        alias: &RoomAliasId,
        sender: &Identity,
    ) -> Result<()> {
        let by = sender.appservice.as_deref().and_then(|id| self.by_id(id));
        self.check_alias_not_exclusive(alias, by.map(|s| &**s))
    }

    /// Whether rate limits spare this user: a user of a service registered with
    /// `rate_limited: false`.
    pub fn unlimited(&self, user: &UserId) -> bool {
        self.services
            .iter()
            .any(|s| s.unlimited() && s.is_interested_in_user(user.as_str()))
    }

    /// Who a request made with the service's `as_token` acts as: the `user_id` query parameter
    /// if given (a user of the service's namespace that exists; `device_id` one of its devices,
    /// MSC3202), else the service's sender. `user_exists` and `device_exists` read the database.
    pub async fn identity<U, D>(
        &self,
        service: &Arc<AppService>,
        user_id: Option<&str>,
        device_id: Option<&str>,
        user_exists: U,
        device_exists: D,
    ) -> Result<Identity>
    where
        U: AsyncFnOnce(&UserId) -> Result<bool>,
        D: AsyncFnOnce(&UserId, &str) -> Result<bool>,
    {
        let user_id = match user_id {
            None => service.sender.clone(),
            Some(user_id) => {
                let user_id = OwnedUserId::try_from(user_id)
                    .map_err(|_| Error::invalid_param("`user_id` is not a user ID"))?;
                // Synapse's checks and messages (synapse/api/auth/internal.py).
                if !service.is_interested_in_user(user_id.as_str()) {
                    return Err(Error::forbidden(format!(
                        "Application service cannot masquerade as this user ({user_id})."
                    )));
                }
                if user_id != service.sender && !user_exists(&user_id).await? {
                    return Err(Error::forbidden(format!(
                        "Application service has not registered this user ({user_id})"
                    )));
                }
                user_id
            }
        };
        let device_id = match device_id {
            Some(device) => {
                if !device_exists(&user_id, device).await? {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::Exclusive,
                        format!(
                            "Application service trying to use a device that doesn't exist \
                             ('{device}' for {user_id})"
                        ),
                    ));
                }
                device.into()
            }
            // Requests without a device act through one of the service's own that is never a
            // stored device: transaction IDs stay apart from the user's real devices'.
            None => format!("appservice:{}", service.registration.id)
                .as_str()
                .into(),
        };
        Ok(Identity {
            user_id,
            device_id,
            is_guest: false,
            appservice: Some(service.registration.id.clone()),
        })
    }
}

/// [`Directory::resolve_alias`](crate::services::directory::Directory::resolve_alias), asking
/// the application services of the alias's namespace when a local alias is unknown.
pub async fn resolve_alias(
    services: &crate::services::Services,
    alias: &RoomAliasId,
) -> Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    match services.directory.resolve_alias(alias).await {
        Err(Error::Matrix { status, .. })
            if status == StatusCode::NOT_FOUND
                && alias.server_name() == services.server_name
                && services.appservices.query_alias(alias).await =>
        {
            services.directory.resolve_alias(alias).await
        }
        other => other,
    }
}

/// Asks the application services of the user's namespace about a user of this server that
/// does not exist (before a profile lookup or an invite), so that a bridge can create it.
pub async fn ensure_user(services: &crate::services::Services, user: &UserId) -> Result<()> {
    if user.server_name() == services.server_name
        && services
            .appservices
            .services
            .iter()
            .any(|s| s.is_interested_in_user(user.as_str()))
        && !services.users.exists(user).await?
    {
        services.appservices.query_user(user).await;
    }
    Ok(())
}

fn exclusive(message: &'static str) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::Exclusive, message)
}

/// Reads and checks one registration file.
fn read_registration(file: &Path, server_name: &ServerName) -> Result<AppService, Invalid> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ("(file)".to_owned(), format!("cannot read the file: {e}")))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ("(file)".to_owned(), format!("not YAML: {e}")))?;
    let registration: Registration = serde_yaml::from_value(value.clone()).map_err(|e| {
        // serde names the missing or wrong key in its message.
        ("(registration)".to_owned(), e.to_string())
    })?;
    let flag = |key: &str| value.get(key).and_then(serde_yaml::Value::as_bool) == Some(true);
    let push_ephemeral = registration.receive_ephemeral
        || flag("push_ephemeral")
        || flag("de.sorunome.msc2409.push_ephemeral");
    let key = |k: &str, why: String| (k.to_owned(), why);
    // As Synapse: a wrong type is refused rather than read as `false`.
    let msc3202 = match value.get("org.matrix.msc3202") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| key("org.matrix.msc3202", "must be true or false".into()))?,
    };
    if registration.id.is_empty() {
        return Err(key("id", "must not be empty".into()));
    }
    for (name, token) in [
        ("as_token", &registration.as_token),
        ("hs_token", &registration.hs_token),
    ] {
        if token.is_empty() {
            return Err(key(name, "must not be empty".into()));
        }
    }
    if let Some(url) = &registration.url {
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(_) => return Err(key("url", "must be an http:// or https:// URL".into())),
            Err(e) => return Err(key("url", format!("not a URL: {e}"))),
        }
    }
    let sender =
        UserId::parse_with_server_name(registration.sender_localpart.as_str(), server_name)
            .map_err(|e| key("sender_localpart", format!("not a valid user name: {e}")))?;
    let compile = |kind: &str, list: &[ruma::api::appservice::Namespace]| {
        list.iter()
            .enumerate()
            .map(|(i, n)| {
                // Synapse matches from the start of the ID (Python's `re.match`).
                Regex::new(&format!("^(?:{})", n.regex))
                    .map(|regex| Namespace {
                        regex,
                        exclusive: n.exclusive,
                    })
                    .map_err(|e| key(&format!("namespaces.{kind}[{i}].regex"), e.to_string()))
            })
            .collect::<Result<Vec<_>, Invalid>>()
    };
    let users = compile("users", &registration.namespaces.users)?;
    let aliases = compile("aliases", &registration.namespaces.aliases)?;
    let rooms = compile("rooms", &registration.namespaces.rooms)?;
    Ok(AppService {
        file: file.to_owned(),
        sender,
        push_ephemeral,
        msc3202,
        users,
        aliases,
        rooms,
        registration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const GOOD: &str = "id: bridge\nurl: http://localhost:29318\nas_token: at\nhs_token: ht\n\
        sender_localpart: bridgebot\nrate_limited: false\n\
        de.sorunome.msc2409.push_ephemeral: true\n\
        namespaces:\n  users:\n  - exclusive: true\n    regex: '@bridge_.*:example.org'\n  \
        aliases:\n  - exclusive: true\n    regex: '#bridge_.*:example.org'\n";

    #[test]
    fn a_registration_loads_and_its_namespaces_match() {
        let dir = tempfile::tempdir().unwrap();
        let server: &ServerName = "example.org".try_into().unwrap();
        let services = AppServices::load(&[write(dir.path(), "a.yaml", GOOD)], server).unwrap();
        let service = services.by_as_token("at").unwrap();
        assert!(services.by_as_token("a").is_none());
        assert!(service.push_ephemeral && service.unlimited() && !service.msc3202);
        assert_eq!(service.sender, "@bridgebot:example.org");
        assert!(service.is_interested_in_user("@bridge_1:example.org"));
        assert!(!service.is_interested_in_user("@alice:example.org"));
        let ghost: &UserId = "@bridge_x:example.org".try_into().unwrap();
        assert!(services.check_user_not_exclusive(ghost, None).is_err());
        assert!(
            services
                .check_user_not_exclusive(ghost, Some(service))
                .is_ok()
        );
        let alias: &RoomAliasId = "#bridge_r:example.org".try_into().unwrap();
        assert!(services.check_alias_not_exclusive(alias, None).is_err());
        let encrypting = format!("{GOOD}org.matrix.msc3202: true\n");
        let encrypting = AppServices::load(&[write(dir.path(), "e.yaml", &encrypting)], server);
        assert!(encrypting.unwrap().by_as_token("at").unwrap().msc3202);
    }

    #[test]
    fn an_invalid_registration_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let server: &ServerName = "example.org".try_into().unwrap();
        let bad_regex = write(
            dir.path(),
            "r.yaml",
            &GOOD.replace("'@bridge_.*", "'@(bridge"),
        );
        let error = AppServices::load(&[bad_regex], server)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("r.yaml") && error.contains("namespaces.users[0].regex"),
            "{error}"
        );
        let no_token = write(dir.path(), "t.yaml", &GOOD.replace("as_token: at\n", ""));
        let error = AppServices::load(&[no_token], server)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("t.yaml") && error.contains("as_token"),
            "{error}"
        );
        let https = write(dir.path(), "h.yaml", &GOOD.replace("http://", "https://"));
        assert!(AppServices::load(&[https], server).is_ok());
        let ftp = write(dir.path(), "f.yaml", &GOOD.replace("http://", "ftp://"));
        let error = AppServices::load(&[ftp], server).unwrap_err().to_string();
        assert!(
            error.contains("f.yaml") && error.contains("`url`"),
            "{error}"
        );
        let flag = write(
            dir.path(),
            "m.yaml",
            &format!("{GOOD}org.matrix.msc3202: yes please\n"),
        );
        let error = AppServices::load(&[flag], server).unwrap_err().to_string();
        assert!(
            error.contains("m.yaml") && error.contains("org.matrix.msc3202"),
            "{error}"
        );
        let a = write(dir.path(), "a.yaml", GOOD);
        let error = AppServices::load(&[a.clone(), a], server)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`id`"), "{error}");
    }
}
