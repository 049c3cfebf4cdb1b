//! Accounts: creating them, naming them, passwords, admin flag, deactivation, profiles.
//!
//! A new user name is checked by one function, [`new_user_id`] (after [`normalize_new_user_name`]),
//! and a new password by one, `passwords::check_policy` for `password_config.policy`: the client
//! API, the admin CLI and the setup wizard all go through them. Hashing is in `passwords.rs`
//! (argon2id, one hash at a time).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MxcUri, OwnedServerName, OwnedUserId, RoomId,
    ServerName, UserId,
    api::{error::ErrorKind, federation::query::get_profile_information::v1 as get_profile},
    canonical_json::to_canonical_value,
    profile::{ProfileFieldName, UserProfile},
};
use serde_json::Value;
use tokio::sync::watch;

use super::{
    federation::client::{FederationClient, FederationError},
    passwords,
};
use crate::{
    config::PasswordPolicy,
    error::{Error, Result},
    services::rooms::publish,
    storage::{
        Database,
        rooms::current_stream_position,
        users as store,
        users::{DeviceRow, UserRow},
    },
};

pub struct Users {
    db: Database,
    server_name: OwnedServerName,
    /// Signing devices out changes device lists (stream positions): /sync must wake for it.
    stream: watch::Sender<i64>,
    /// `password_config.policy`: every new password is checked against it.
    password_policy: PasswordPolicy,
    /// Profiles of other servers' users are asked of them.
    federation: Arc<FederationClient>,
    /// Whether this server federates at all: off, other servers are not asked.
    federation_enabled: bool,
    /// Other servers' answers to profile queries, reused for [`REMOTE_PROFILE_TTL`] and dropped
    /// at once when a member event of the user arrives (a profile change travels that way).
    remote_profiles: Mutex<HashMap<OwnedUserId, (Instant, UserProfile)>>,
}

/// How long another server's profile answer is reused: clients ask for the same profile in
/// bursts (a room's member list, a mention pill, the user info panel), and a change arrives as a
/// member event, which drops the entry anyway.
const REMOTE_PROFILE_TTL: Duration = Duration::from_secs(60);
/// The most remote profiles kept; past it the expired ones go, then all (bounded memory).
const REMOTE_PROFILE_CACHE_MAX: usize = 10_000;

/// Longest user ID the spec allows, sigil and server name included.
const MAX_USER_ID_LENGTH: usize = 255;

impl Users {
    pub fn new(
        db: Database,
        server_name: OwnedServerName,
        stream: watch::Sender<i64>,
        password_policy: PasswordPolicy,
        federation: Arc<FederationClient>,
        federation_enabled: bool,
    ) -> Self {
        Self {
            db,
            server_name,
            stream,
            password_policy,
            federation,
            federation_enabled,
            remote_profiles: Mutex::default(),
        }
    }

    /// A user's profile (`displayname`, `avatar_url`), or only `field` of it: a local user's
    /// from the database, another server's user's asked of that server (`/query/profile`, the
    /// whole profile, cached briefly). `404 M_NOT_FOUND` for a user that does not exist; for
    /// another server's user the errors of Synapse's `ProfileHandler.get_profile`: the other
    /// server's `403`, `404` and `5xx` passed on, `502` when it cannot be asked or answers
    /// anything else, `403 M_FORBIDDEN` when federation is off or may not reach that server.
    pub async fn profile(
        &self,
        user_id: &UserId,
        field: Option<&ProfileFieldName>,
    ) -> Result<UserProfile> {
        if user_id.server_name() != self.server_name {
            let whole = self.remote_profile(user_id).await?;
            let mut profile = UserProfile::new();
            for (name, value) in whole.iter() {
                if field.is_none_or(|field| field.as_str() == name) {
                    profile.set(name.clone(), value.clone());
                }
            }
            return Ok(profile);
        }
        let user = user_id.to_string();
        let (user, fields) = self
            .db
            .read(move |c| {
                let row = store::get_user(c, &user)?;
                let fields = match row {
                    Some(_) => store::profile_fields(c, &user)?,
                    None => Vec::new(),
                };
                Ok::<_, Error>((row, fields))
            })
            .await?;
        let user = user.ok_or_else(|| Error::not_found("Profile not found"))?;
        let mut profile = UserProfile::new();
        let wanted = |name: &str| field.is_none_or(|field| field.as_str() == name);
        if let Some(name) = user.displayname.filter(|_| wanted("displayname")) {
            profile.set("displayname".to_owned(), name.into());
        }
        if let Some(url) = user.avatar_url.filter(|_| wanted("avatar_url")) {
            profile.set("avatar_url".to_owned(), url.into());
        }
        for row in fields.into_iter().filter(|row| wanted(&row.field)) {
            match serde_json::from_str(&row.value) {
                Ok(value) => profile.set(row.field, value),
                Err(e) => tracing::warn!(%user_id, field = row.field, "stored profile field: {e}"),
            }
        }
        Ok(profile)
    }

    /// Sets one of the user's own extended profile fields (Matrix 1.16: `m.tz` or any key but
    /// `displayname` and `avatar_url`, which have their own setters), as Synapse: the key name
    /// checked ([`check_profile_field_name`]), the value canonical JSON (`400 M_BAD_JSON`), the
    /// whole profile at most [`MAX_PROFILE_BYTES`] (`400 M_PROFILE_TOO_LARGE`). Not copied into
    /// member events or the user directory (Synapse does not either).
    pub async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Value,
    ) -> Result<()> {
        check_profile_field_name(field)?;
        let value = to_canonical_value(value)
            .map_err(|e| Error::bad_json(format!("The value is not canonical JSON: {e}")))?;
        let (user, field) = (user_id.to_string(), field.to_owned());
        self.db
            .write(move |tx| {
                check_profile_size(tx, &user, &field, Some(&value))?;
                let json = serde_json::to_string(&value).map_err(Error::internal)?;
                store::set_profile_field(tx, &user, &field, &json)?;
                Ok(())
            })
            .await
    }

    /// Removes one of the user's own extended profile fields (none there: nothing to do).
    pub async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> Result<()> {
        check_profile_field_name(field)?;
        let (user, field) = (user_id.to_string(), field.to_owned());
        self.db
            .write(move |tx| {
                store::delete_profile_field(tx, &user, &field)?;
                Ok(())
            })
            .await
    }

    /// Another server's user's whole profile, from the cache or asked of their server.
    async fn remote_profile(&self, user_id: &UserId) -> Result<UserProfile> {
        if let Some(profile) = self.cached_remote_profile(user_id) {
            return Ok(profile);
        }
        let server = user_id.server_name();
        if !self.federation_enabled || !self.federation.may_contact(server) {
            // Synapse's `FederationDeniedError` (`federation_domain_whitelist`).
            return Err(Error::forbidden(format!(
                "Federation denied with {server}."
            )));
        }
        let request = get_profile::Request::new(user_id.to_owned());
        let response = self
            .federation
            .send(server, request)
            .await
            .map_err(profile_query_error)?;
        let mut profiles = lock(&self.remote_profiles);
        if profiles.len() >= REMOTE_PROFILE_CACHE_MAX {
            profiles.retain(|_, (fetched, _)| fetched.elapsed() < REMOTE_PROFILE_TTL);
            if profiles.len() >= REMOTE_PROFILE_CACHE_MAX {
                profiles.clear();
            }
        }
        profiles.insert(user_id.to_owned(), (Instant::now(), response.data.clone()));
        Ok(response.data)
    }

    fn cached_remote_profile(&self, user_id: &UserId) -> Option<UserProfile> {
        let profiles = lock(&self.remote_profiles);
        let (fetched, profile) = profiles.get(user_id)?;
        (fetched.elapsed() < REMOTE_PROFILE_TTL).then(|| profile.clone())
    }

    /// Forgets the cached profile of another server's user: a member event of theirs arrived,
    /// which is how a profile change reaches this server.
    pub fn forget_remote_profile(&self, user_id: &UserId) {
        lock(&self.remote_profiles).remove(user_id);
    }

    /// Checks a new password against `password_config.policy` (Synapse's errcodes).
    pub fn check_password_policy(&self, password: &str) -> Result<()> {
        passwords::check_policy(&self.password_policy, password)
    }

    /// Reads a localpart or a full user ID of this server; the ID need not exist.
    pub fn parse_local_user(&self, input: &str) -> Result<OwnedUserId> {
        let user_id = if input.starts_with('@') {
            UserId::parse(input)
                .map_err(|e| Error::invalid_param(format!("`{input}` is not a user ID: {e}")))?
        } else {
            UserId::parse_with_server_name(input.to_lowercase(), &self.server_name).map_err(
                |e| Error::invalid_param(format!("`{input}` is not a valid user name: {e}")),
            )?
        };
        if user_id.server_name() != self.server_name {
            return Err(Error::invalid_param(format!(
                "{user_id} is not a user of this server"
            )));
        }
        Ok(user_id)
    }

    /// The user ID a new account with this localpart would get, checked with Synapse's rules.
    /// `localpart` is taken as typed: [`normalize_new_user_name`] first for a name a person typed.
    pub fn new_user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        new_user_id(localpart, &self.server_name)
    }

    pub async fn exists(&self, user_id: &UserId) -> Result<bool> {
        let user_id = user_id.to_string();
        self.db
            .read(move |c| store::user_exists(c, &user_id).map_err(Error::from))
            .await
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<UserRow>> {
        let user_id = user_id.to_string();
        self.db
            .read(move |c| store::get_user(c, &user_id).map_err(Error::from))
            .await
    }

    /// Whether `user_id` is a server admin (`false` for an unknown user, as Synapse answers).
    pub async fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id).await?.is_some_and(|user| user.is_admin))
    }

    /// `GET /admin/whois/{userId}`: the devices of `target` with where and when each was last
    /// seen. As Synapse's `WhoisRestServlet`: a user may ask about themselves, a server admin
    /// about anyone (`403 M_FORBIDDEN` otherwise, checked first, so that nobody else learns
    /// whether an account exists); another server's user is `400` ("Can only whois a local
    /// user"), and an unknown local user has no devices (Synapse answers the same, not `404`).
    pub async fn whois(&self, requester: &UserId, target: &UserId) -> Result<Vec<DeviceRow>> {
        if requester != target && !self.is_admin(requester).await? {
            return Err(Error::forbidden("You are not a server admin"));
        }
        if target.server_name() != self.server_name {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Can only whois a local user",
            ));
        }
        let target = target.to_string();
        self.db
            .read(move |c| store::list_devices(c, &target).map_err(Error::from))
            .await
    }

    pub async fn get_existing(&self, user_id: &UserId) -> Result<UserRow> {
        self.get(user_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("No such user: {user_id}")))
    }

    pub async fn list(&self) -> Result<Vec<UserRow>> {
        self.db
            .read(|c| store::list_users(c).map_err(Error::from))
            .await
    }

    /// Creates an account. `extra` runs in the same transaction, so a registration token is
    /// spent only when the account really exists.
    pub async fn create(
        &self,
        user_id: &UserId,
        password: Option<String>,
        is_admin: bool,
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let hash = match password {
            Some(password) => {
                passwords::check_policy(&self.password_policy, &password)?;
                Some(passwords::hash(password).await?)
            }
            None => None,
        };
        let user_id = user_id.to_owned();
        self.db
            .write(move |tx| {
                let created = store::insert_user(
                    tx,
                    &store::NewUser {
                        user_id: user_id.as_str(),
                        localpart: user_id.localpart(),
                        password_hash: hash.as_deref(),
                        is_admin,
                        // Synapse's default display name is the localpart.
                        displayname: Some(user_id.localpart()),
                    },
                )?;
                if !created {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::UserInUse,
                        "User ID already taken",
                    ));
                }
                extra(tx)
            })
            .await
    }

    /// Creates a guest account (no password) under a fresh numeric localpart: Synapse's form for
    /// guests, which [`new_user_id`] refuses to everyone else.
    pub async fn create_guest(&self) -> Result<OwnedUserId> {
        // Random rather than Synapse's sequence, so that guest IDs do not count the accounts.
        let number = 100_000_000_000 + rand::random::<u64>() % 900_000_000_000;
        let user_id = UserId::parse_with_server_name(number.to_string(), &self.server_name)
            .map_err(Error::internal)?;
        let id = user_id.to_string();
        self.create(&user_id, None, false, move |tx| {
            store::set_guest(tx, &id).map_err(Error::from)
        })
        .await?;
        Ok(user_id)
    }

    /// The guest accounts joined to a room.
    pub async fn joined_guests(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        let room = room_id.to_string();
        let ids = self
            .db
            .read(move |c| store::joined_guests(c, &room).map_err(Error::from))
            .await?;
        ids.into_iter()
            .map(|id| OwnedUserId::try_from(id).map_err(Error::internal))
            .collect()
    }

    /// Makes a guest account a full account with `password`: same user ID, same rooms.
    /// `extra` runs in the same transaction, as for [`Self::create`].
    pub async fn upgrade_guest(
        &self,
        user_id: &UserId,
        password: String,
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        passwords::check_policy(&self.password_policy, &password)?;
        let hash = passwords::hash(password).await?;
        let user_id = user_id.to_string();
        self.db
            .write(move |tx| {
                if !store::upgrade_guest(tx, &user_id, &hash)? {
                    return Err(Error::forbidden("Not a guest account"));
                }
                extra(tx)
            })
            .await
    }

    /// Checks a password; `false` for deactivated accounts and accounts without a password.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let Some(user) = self.get(user_id).await? else {
            // Hash anyway, so that timing does not tell which user names exist.
            passwords::verify(password.to_owned(), Some(DUMMY_HASH.to_owned())).await;
            return Ok(false);
        };
        if user.deactivated {
            return Ok(false);
        }
        Ok(passwords::verify(password.to_owned(), user.password_hash).await)
    }

    /// Sets a new password; with `logout_devices`, every device but `keep_device` is signed out in
    /// the same transaction.
    pub async fn set_password(
        &self,
        user_id: &UserId,
        password: String,
        logout_devices: bool,
        keep_device: Option<String>,
    ) -> Result<()> {
        passwords::check_policy(&self.password_policy, &password)?;
        let hash = passwords::hash(password).await?;
        let user_id = user_id.to_string();
        let position = self
            .db
            .write(move |tx| {
                if !store::set_password_hash(tx, &user_id, Some(&hash))? {
                    return Err(Error::not_found(format!("No such user: {user_id}")));
                }
                if logout_devices {
                    store::delete_all_devices(tx, &user_id, keep_device.as_deref())?;
                }
                Ok(current_stream_position(tx)?)
            })
            .await?;
        publish(&self.stream, position);
        Ok(())
    }

    /// Deactivates the account: signs out every device, removes the password and profile; the
    /// user ID stays reserved forever.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let user_id = user_id.to_string();
        let position = self
            .db
            .write(move |tx| {
                if !store::deactivate(tx, &user_id)? {
                    return Err(Error::not_found(format!("No such user: {user_id}")));
                }
                store::delete_all_devices(tx, &user_id, None)?;
                // As Synapse: none of the account's delayed events (MSC4140) is sent any more.
                crate::storage::delayed_events::cancel_for_user(tx, &user_id)?;
                Ok(current_stream_position(tx)?)
            })
            .await?;
        publish(&self.stream, position);
        Ok(())
    }

    pub async fn set_admin(&self, user_id: &UserId, is_admin: bool) -> Result<()> {
        let user_id = user_id.to_string();
        self.db
            .write(move |tx| match store::set_admin(tx, &user_id, is_admin)? {
                true => Ok(()),
                false => Err(Error::not_found(format!("No such user: {user_id}"))),
            })
            .await
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<String>) -> Result<()> {
        if name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(Error::invalid_param(
                "The display name is longer than 256 bytes",
            ));
        }
        let user_id = user_id.to_string();
        self.db
            .write(move |tx| {
                if let Some(name) = &name {
                    let value = CanonicalJsonValue::String(name.clone());
                    check_profile_size(tx, &user_id, "displayname", Some(&value))?;
                }
                match store::set_displayname(tx, &user_id, name.as_deref())? {
                    true => Ok(()),
                    false => Err(Error::not_found("No such user")),
                }
            })
            .await
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<String>) -> Result<()> {
        if url.as_ref().is_some_and(|u| u.len() > 1000) {
            return Err(Error::invalid_param(
                "The avatar URL is longer than 1000 bytes",
            ));
        }
        // Anything else would make every client that shows the avatar fetch a URL of the
        // user's choosing.
        if url
            .as_deref()
            .is_some_and(|u| !<&MxcUri>::from(u).is_valid())
        {
            return Err(Error::invalid_param("The avatar URL must be an mxc:// URI"));
        }
        let user_id = user_id.to_string();
        self.db
            .write(move |tx| {
                if let Some(url) = &url {
                    let value = CanonicalJsonValue::String(url.clone());
                    check_profile_size(tx, &user_id, "avatar_url", Some(&value))?;
                }
                match store::set_avatar_url(tx, &user_id, url.as_deref())? {
                    true => Ok(()),
                    false => Err(Error::not_found("No such user")),
                }
            })
            .await
    }
}

/// The most a user's whole profile may take as canonical JSON (the spec's 64 KiB, Synapse's
/// `MAX_PROFILE_SIZE`).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
/// The longest profile key, in bytes.
const MAX_PROFILE_KEY_BYTES: usize = 255;

/// A profile key as Synapse accepts it: not empty (`400 M_INVALID_PARAM`), at most 255 bytes
/// (`400 M_KEY_TOO_LARGE`), and of the Common Namespaced Identifier Grammar, lowercase letters,
/// digits, `_`, `.` and `-` after a first letter (`400 M_INVALID_PARAM`).
pub fn check_profile_field_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_param("Field name too short"));
    }
    if name.len() > MAX_PROFILE_KEY_BYTES {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::KeyTooLarge,
            "Field name too long",
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    {
        return Err(Error::invalid_param(
            "Field name does not follow Common Namespaced Identifier Grammar",
        ));
    }
    Ok(())
}

/// Refuses a change that would make the user's whole profile (display name, avatar URL and
/// the other fields, with `field` set to `value` or removed) larger than [`MAX_PROFILE_BYTES`]
/// as canonical JSON: `400 M_PROFILE_TOO_LARGE`. Runs in the write transaction of the change.
fn check_profile_size(
    conn: &rusqlite::Connection,
    user_id: &str,
    field: &str,
    value: Option<&CanonicalJsonValue>,
) -> Result<()> {
    let Some(user) = store::get_user(conn, user_id)? else {
        return Err(Error::not_found("No such user"));
    };
    let mut profile = CanonicalJsonObject::new();
    for (name, current) in [
        ("displayname", user.displayname),
        ("avatar_url", user.avatar_url),
    ] {
        if let Some(current) = current {
            profile.insert(name.to_owned(), CanonicalJsonValue::String(current));
        }
    }
    for row in store::profile_fields(conn, user_id)? {
        let stored = serde_json::from_str(&row.value).map_err(Error::internal)?;
        profile.insert(row.field, stored);
    }
    match value {
        Some(value) => profile.insert(field.to_owned(), value.clone()),
        None => profile.remove(field),
    };
    let size = serde_json::to_vec(&profile).map_err(Error::internal)?.len();
    if size > MAX_PROFILE_BYTES {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::ProfileTooLarge,
            "Profile too large",
        ));
    }
    Ok(())
}

/// The cache's lock; a panic while it was held left nothing half-written worth refusing.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Another server's failure to answer a profile query as this server's answer, as Synapse's
/// `ProfileHandler.get_profile`: the other server's `403`, `404` and `5xx` passed on with their
/// errcode (the client API allows no other codes there), anything else `502`.
fn profile_query_error(error: FederationError) -> Error {
    if let FederationError::Matrix(remote) = &error {
        let status = remote.status_code;
        if status == StatusCode::FORBIDDEN
            || status == StatusCode::NOT_FOUND
            || status.is_server_error()
        {
            let kind = remote.error_kind().cloned().unwrap_or(ErrorKind::Unknown);
            let message = match &remote.body {
                ruma::api::error::ErrorBody::Standard(body) => body.message.clone(),
                _ => "Failed to fetch profile".to_owned(),
            };
            return Error::new(status, kind, message);
        }
    }
    tracing::info!("profile query failed: {error}");
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        "Failed to fetch profile",
    )
}

/// A requested new user name as the localpart to check: lowercased, as Synapse does at
/// registration (client and shared-secret) and as the admin CLI and the setup wizard do.
/// Everything else is then checked, not changed, by [`new_user_id`].
pub fn normalize_new_user_name(requested: &str) -> String {
    requested.to_lowercase()
}

/// What a person typed as a new user name in the admin CLI or the setup wizard: a full user ID
/// of this server (`@Alice:example.org`) names its localpart; then [`normalize_new_user_name`].
/// (The client API takes only localparts, as Synapse does.)
pub fn typed_user_name(typed: &str, server_name: &ServerName) -> String {
    let localpart = typed
        .strip_prefix('@')
        // A localpart has no colon: the server name (which may have a port) is all after the first.
        .and_then(|rest| rest.split_once(':'))
        .filter(|(_, server)| server.eq_ignore_ascii_case(server_name.as_str()))
        .map_or(typed, |(localpart, _)| localpart);
    normalize_new_user_name(localpart)
}

/// The user ID a new account with this localpart gets on `server_name`, checked with Synapse's
/// rules (`RegistrationHandler.check_username`): only `a-z 0-9 . _ = - / +`, not empty, not
/// starting with `_`, not all digits, and the whole ID at most 255 characters.
pub fn new_user_id(localpart: &str, server_name: &ServerName) -> Result<OwnedUserId> {
    let invalid = |why: &str| {
        Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidUsername,
            why.to_owned(),
        )
    };
    if localpart.is_empty() {
        return Err(invalid("The user name must not be empty"));
    }
    if !localpart
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
    {
        return Err(invalid(
            "User names may only contain a-z, 0-9 and . _ = - / +",
        ));
    }
    if localpart.starts_with('_') {
        return Err(invalid(
            "User names may not begin with _ (reserved for bridges)",
        ));
    }
    if localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("Numeric user names are reserved"));
    }
    let user_id = UserId::parse_with_server_name(localpart, server_name)
        .map_err(|e| invalid(&format!("Invalid user name: {e}")))?;
    if user_id.as_str().len() > MAX_USER_ID_LENGTH {
        return Err(invalid("The user ID would be longer than 255 characters"));
    }
    Ok(user_id)
}

/// A valid argon2id hash of a random password, verified against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2mIeDdCd2Uwmx2MR+8MbdRp9DG4Ue0HT9lAS/wAp3qA";
