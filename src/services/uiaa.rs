//! User-interactive authentication: the `flows`/`session`/`completed` dance of `/register`,
//! `/account/password`, `/account/deactivate` and device deletion. Sessions live in memory for a
//! few minutes; losing them on restart only means the client starts the dance again.
//!
//! A session belongs to the user and the request that started it ([`Operation`]: method, path
//! and, for a signed-in user, the body's parameters): another user, or another request (say, a
//! `delete_devices` of other devices), cannot complete it, as Synapse checks URI and method.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::Services;
use crate::error::{Error, Result};

const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Uiaa {
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    created: Instant,
    user: Option<OwnedUserId>,
    operation: Operation,
    completed: Vec<AuthType>,
    /// The registration token accepted in this session, spent when the account is created.
    registration_token: Option<String>,
}

/// The request a session was started for. Parameters are a SHA-256 of the body's canonical
/// JSON without `auth` (no password kept in memory); registration leaves them out, as Synapse
/// lets a client change its registration parameters between stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    method: String,
    path: String,
    params: Option<Vec<u8>>,
}

impl Operation {
    /// `body` is the request's JSON; `with_params` binds its parameters too.
    pub fn new(method: &http::Method, path: &str, body: &[u8], with_params: bool) -> Self {
        let params = with_params.then(|| {
            use sha2::Digest;
            let mut object: ruma::CanonicalJsonObject =
                serde_json::from_slice(body).unwrap_or_default();
            object.remove("auth");
            let canonical = ruma::CanonicalJsonValue::Object(object).to_string();
            sha2::Sha256::digest(canonical.as_bytes()).to_vec()
        });
        Self {
            method: method.to_string(),
            path: path.to_owned(),
            params,
        }
    }
}

/// What a completed authentication proved.
#[derive(Debug, Default)]
pub struct Completed {
    pub registration_token: Option<String>,
}

impl Uiaa {
    /// Advances the session named in `auth` by the stage it carries. `Ok` once one of `flows`
    /// is complete; otherwise the `401` challenge to send back. `user` is the account whose
    /// password `m.login.password` must match (the requester, for authenticated endpoints);
    /// `operation` the request, which must stay the same through the session.
    pub async fn authenticate(
        &self,
        services: &Services,
        auth: Option<&AuthData>,
        flows: &[AuthFlow],
        user: Option<&UserId>,
        operation: &Operation,
    ) -> Result<Completed> {
        let Some(auth) = auth else {
            let session = self.start(user, operation);
            return Err(self.challenge(flows, &session, None));
        };
        let session_id = match auth.session() {
            Some(id) => {
                let Some((owner, started_for)) =
                    self.with_session(id, |s| (s.user.clone(), s.operation.clone()))
                else {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::Unknown,
                        "Unknown UIA session",
                    ));
                };
                // Synapse: `AuthError(403, "Invalid auth")` for another user's session, and a
                // 403 `M_UNKNOWN` when the request is not the one the session started with.
                if owner.as_deref() != user {
                    return Err(Error::forbidden(
                        "This authentication session belongs to another user",
                    ));
                }
                if started_for != *operation {
                    return Err(Error::new(
                        StatusCode::FORBIDDEN,
                        ErrorKind::Unknown,
                        "Requested operation has changed during the UI authentication session.",
                    ));
                }
                id.to_owned()
            }
            // A client may complete a single-stage flow without asking for a session first.
            None => self.start(user, operation),
        };
        let Some(auth_type) = auth.auth_type() else {
            return Err(Error::bad_json("Unknown auth type"));
        };
        let allowed = flows.iter().any(|flow| flow.stages.contains(&auth_type));
        if !allowed {
            let error = StandardErrorBody::new(
                ErrorKind::Unrecognized,
                format!("Unexpected auth type {auth_type}"),
            );
            return Err(self.challenge(flows, &session_id, Some(error)));
        }
        match self.check_stage(services, auth, user).await {
            Ok(token) => {
                self.with_session(&session_id, |s| {
                    if !s.completed.contains(&auth_type) {
                        s.completed.push(auth_type.clone());
                    }
                    if token.is_some() {
                        s.registration_token = token;
                    }
                });
            }
            Err(StageError::Refused(error)) => {
                return Err(self.challenge(flows, &session_id, Some(error)));
            }
            Err(StageError::Fatal(error)) => return Err(error),
        }
        let done = self.with_session(&session_id, |s| {
            flows
                .iter()
                .any(|flow| flow.stages.iter().all(|stage| s.completed.contains(stage)))
        });
        if done == Some(true) {
            let session = self
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&session_id);
            return Ok(Completed {
                registration_token: session.and_then(|s| s.registration_token),
            });
        }
        Err(self.challenge(flows, &session_id, None))
    }

    fn start(&self, user: Option<&UserId>, operation: &Operation) -> String {
        let id = ruma::TransactionId::new().to_string();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        sessions.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                user: user.map(ToOwned::to_owned),
                operation: operation.clone(),
                completed: Vec::new(),
                registration_token: None,
            },
        );
        id
    }

    fn with_session<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get_mut(id)
            .filter(|s| s.created.elapsed() < SESSION_LIFETIME)
            .map(f)
    }

    fn challenge(
        &self,
        flows: &[AuthFlow],
        session: &str,
        error: Option<StandardErrorBody>,
    ) -> Error {
        let mut info = UiaaInfo::new(flows.to_vec());
        info.session = Some(session.to_owned());
        info.completed = self
            .with_session(session, |s| s.completed.clone())
            .unwrap_or_default();
        info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
        info.auth_error = error.map(Box::new);
        Error::Uiaa(Box::new(info))
    }

    /// Checks one stage; returns the registration token it accepted, if any.
    async fn check_stage(
        &self,
        services: &Services,
        auth: &AuthData,
        user: Option<&UserId>,
    ) -> Result<Option<String>, StageError> {
        match auth {
            AuthData::Dummy(_) => Ok(None),
            AuthData::Password(password) => {
                let Some(expected) = user else {
                    return Err(StageError::Fatal(Error::forbidden(
                        "Password authentication needs a signed-in user",
                    )));
                };
                let claimed: Option<OwnedUserId> = match &password.identifier {
                    UserIdentifier::Matrix(id) => services.users.parse_local_user(&id.user).ok(),
                    _ => None,
                };
                if claimed.as_deref().is_some_and(|c| c != expected) {
                    return Err(StageError::refused(
                        "The password must be for the signed-in user",
                    ));
                }
                let valid = services
                    .users
                    .check_password(expected, &password.password)
                    .await
                    .map_err(StageError::Fatal)?;
                if valid {
                    Ok(None)
                } else {
                    Err(StageError::refused("Invalid password"))
                }
            }
            AuthData::RegistrationToken(token) => {
                let valid = services
                    .registration
                    .token_is_valid(&token.token)
                    .await
                    .map_err(StageError::Fatal)?;
                if valid {
                    Ok(Some(token.token.clone()))
                } else {
                    Err(StageError::Refused(StandardErrorBody::new(
                        ErrorKind::Unauthorized,
                        "Invalid or used-up registration token".to_owned(),
                    )))
                }
            }
            other => Err(StageError::Refused(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                format!("Auth type {:?} is not supported", other.auth_type()),
            ))),
        }
    }
}

enum StageError {
    /// The stage failed; the client may try it again in the same session.
    Refused(StandardErrorBody),
    Fatal(Error),
}

impl StageError {
    fn refused(message: &str) -> Self {
        Self::Refused(StandardErrorBody::new(
            ErrorKind::Forbidden,
            message.to_owned(),
        ))
    }
}
