//! Devices and their access tokens: login, authentication of every request, logout.
//!
//! Tokens are looked up in the database on every request rather than cached, so that a password
//! reset or deactivation done by the admin CLI in another process takes effect at once.
//!
//! Access tokens are stored as their SHA-256, never in clear; so are OpenID tokens
//! ([`Sessions::request_openid_token`]), which prove to another server (an integration manager, a
//! widget's backend) who a user is, through `/_matrix/federation/v1/openid/userinfo`.

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    services::rooms::publish,
    storage::{Database, now_ms, rooms::current_stream_position, users as store, users::DeviceRow},
};

/// The authenticated sender of a request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// A guest account's (`register?kind=guest`): `web::ruma` lets it call only the spec's
    /// guest endpoints.
    pub is_guest: bool,
    /// The `id` of the application service acting, when the token was its `as_token`.
    pub appservice: Option<String>,
}

/// A fresh login: the token is shown to the client once and never stored in clear.
pub struct NewSession {
    pub access_token: String,
    pub device_id: OwnedDeviceId,
}

/// `last_seen` of a device is written at most this often, to keep writes off the hot path.
const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

pub struct Sessions {
    db: Database,
    /// New, renamed and deleted devices are device-list changes (written by triggers into the
    /// stream): /sync long-polls must wake for them.
    stream: watch::Sender<i64>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// How long an OpenID token is valid: Synapse's one hour.
pub const OPENID_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

fn new_access_token() -> String {
    // 256 random bits; the prefix makes leaked tokens recognisable to secret scanners.
    format!("mat_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

impl Sessions {
    pub fn new(db: Database, stream: watch::Sender<i64>) -> Self {
        Self { db, stream }
    }

    /// Logs a device in: creates it (or reuses the ID the client asked for, whose older tokens
    /// are then revoked, as the spec says) and issues a new access token.
    pub async fn create(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<NewSession> {
        let device_id = device_id.unwrap_or_else(ruma::DeviceId::new);
        if device_id.as_str().is_empty() || device_id.as_str().len() > 255 {
            return Err(Error::invalid_param(
                "The device ID must have 1 to 255 characters",
            ));
        }
        let access_token = new_access_token();
        let hash = token_hash(&access_token);
        let (user, device) = (user_id.to_string(), device_id.to_string());
        self.db
            .write(move |tx| {
                let ip = ip.map(|ip| ip.to_string());
                // Keep the device row (its keys will hang off it later) but revoke old tokens.
                tx.execute(
                    "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
                    [&user, &device],
                )?;
                store::upsert_device(tx, &user, &device, display_name.as_deref(), ip.as_deref())?;
                store::insert_access_token(tx, &hash, &user, &device)?;
                Ok::<_, Error>(current_stream_position(tx)?)
            })
            .await
            .map(|position| publish(&self.stream, position))?;
        Ok(NewSession {
            access_token,
            device_id,
        })
    }

    /// A new OpenID token of `user_id`, valid [`OPENID_TOKEN_LIFETIME`]; expired tokens are
    /// deleted in the same transaction.
    pub async fn request_openid_token(&self, user_id: &UserId) -> Result<String> {
        let token = format!("mao_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
        let hash = token_hash(&token);
        let user = user_id.to_string();
        let now = now_ms();
        let valid_until = now + OPENID_TOKEN_LIFETIME.as_millis() as i64;
        self.db
            .write(move |tx| {
                crate::storage::openid::insert_token(tx, &hash, &user, valid_until, now)
            })
            .await
            .map_err(Error::from)?;
        Ok(token)
    }

    /// Whose OpenID token this is, if it is still valid; `401 M_UNKNOWN_TOKEN` otherwise (with
    /// Synapse's message).
    pub async fn openid_token_user(&self, token: &str) -> Result<OwnedUserId> {
        let hash = token_hash(token);
        let now = now_ms();
        let user = self
            .db
            .read(move |c| crate::storage::openid::token_user(c, &hash, now).map_err(Error::from))
            .await?;
        let unknown = || {
            Error::new(
                http::StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::UnknownToken(
                    ruma::api::error::UnknownTokenErrorData::new(),
                ),
                "Access Token unknown or expired",
            )
        };
        OwnedUserId::try_from(user.ok_or_else(unknown)?).map_err(Error::internal)
    }

    /// Who sent a request with this token; `M_UNKNOWN_TOKEN` when nobody.
    pub async fn authenticate(&self, token: &str, ip: Option<IpAddr>) -> Result<Identity> {
        let hash = token_hash(token);
        let owner = self
            .db
            .read(move |c| store::find_token_owner(c, &hash).map_err(Error::from))
            .await?;
        let owner = owner.ok_or_else(Error::unknown_token)?;
        let identity = Identity {
            user_id: OwnedUserId::try_from(owner.user_id.as_str()).map_err(Error::internal)?,
            device_id: owner.device_id.as_str().into(),
            is_guest: owner.is_guest,
            appservice: None,
        };
        if owner
            .last_seen_ts
            .is_none_or(|seen| now_ms() - seen > LAST_SEEN_GRANULARITY_MS)
        {
            let db = self.db.clone();
            // Bookkeeping: the request does not wait for it, and a failure only costs accuracy.
            tokio::spawn(async move {
                let ip = ip.map(|ip| ip.to_string());
                let result = db
                    .write(move |tx| {
                        store::touch_device(tx, &owner.user_id, &owner.device_id, ip.as_deref())
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cannot record device activity");
                }
            });
        }
        Ok(identity)
    }

    /// Ends one session: the device and its tokens are deleted.
    pub async fn logout(&self, identity: &Identity) -> Result<()> {
        self.delete_device(&identity.user_id, identity.device_id.as_str())
            .await
            .map(|_| ())
    }

    /// Ends every session of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let user = user_id.to_string();
        let position = self
            .db
            .write(move |tx| {
                store::delete_all_devices(tx, &user, None)?;
                current_stream_position(tx)
            })
            .await?;
        publish(&self.stream, position);
        Ok(())
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRow>> {
        let user = user_id.to_string();
        self.db
            .read(move |c| store::list_devices(c, &user).map_err(Error::from))
            .await
    }

    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<DeviceRow> {
        let (user, device) = (user_id.to_string(), device_id.to_owned());
        self.db
            .read(move |c| store::get_device(c, &user, &device).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found("No such device"))
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        if name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(Error::invalid_param(
                "The device name is longer than 256 bytes",
            ));
        }
        let (user, device) = (user_id.to_string(), device_id.to_owned());
        let (found, position) = self
            .db
            .write(move |tx| {
                let found = store::set_device_display_name(tx, &user, &device, name.as_deref())?;
                Ok::<_, Error>((found, current_stream_position(tx)?))
            })
            .await?;
        publish(&self.stream, position);
        if found {
            Ok(())
        } else {
            Err(Error::not_found("No such device"))
        }
    }

    /// Deletes devices (and so signs them out); returns how many existed.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: Vec<String>) -> Result<usize> {
        let user = user_id.to_string();
        let (deleted, position) = self
            .db
            .write(move |tx| {
                let mut deleted = 0;
                for device in &device_ids {
                    deleted += usize::from(store::delete_device(tx, &user, device)?);
                }
                Ok::<_, Error>((deleted, current_stream_position(tx)?))
            })
            .await?;
        publish(&self.stream, position);
        Ok(deleted)
    }

    pub async fn delete_device(&self, user_id: &UserId, device_id: &str) -> Result<bool> {
        Ok(self
            .delete_devices(user_id, vec![device_id.to_owned()])
            .await?
            == 1)
    }
}
