//! Leaky-bucket rate limiting with Synapse's semantics: a key may do `burst_count` actions at
//! once and then `per_second` on average. Unlike generic limiters, a check can look without
//! spending (`peek`), which Synapse's login flow needs: failed attempts are only counted when
//! they fail, but a locked-out account is refused before its password is even checked.
//!
//! `AccountLimits` applies Synapse's per-account limits on what users do in rooms and the media
//! repository (`rc_message`, `rc_admin_redaction`, `rc_joins`, `rc_invites`, `rc_room_creation`,
//! `rc_media_create`, `rc_delayed_event_mgmt`), checked by the services before they write; server
//! admins are exempt.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::{
    config::{Config, RateLimit},
    error::{Error, Result},
    storage::Database,
};

pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Actions counted, drained at `per_second` since `since`.
    level: f64,
    since: Instant,
}

/// Buckets are dropped once this many are held and they have drained.
const PRUNE_ABOVE: usize = 10_000;

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses with `M_LIMIT_EXCEEDED` if one more action would exceed the limit, without
    /// counting it.
    pub fn peek(&self, key: &K) -> Result<()> {
        self.act(key, false)
    }

    /// Counts one action, or refuses it with `M_LIMIT_EXCEEDED`.
    pub fn take(&self, key: &K) -> Result<()> {
        self.act(key, true)
    }

    /// Counts one action even over the limit (a failure that already happened).
    pub fn record(&self, key: &K) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = self.drained(buckets.get(key), now);
        buckets.insert(
            key.clone(),
            Bucket {
                level: level + 1.0,
                since: now,
            },
        );
    }

    fn act(&self, key: &K, count: bool) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = self.drained(buckets.get(key), now);
        if level + 1.0 > self.limit.burst_count {
            let wait = (level + 1.0 - self.limit.burst_count) / self.limit.per_second;
            return Err(Error::limit_exceeded(Duration::from_secs_f64(wait)));
        }
        if count {
            if buckets.len() >= PRUNE_ABOVE {
                buckets.retain(|_, b| self.drained(Some(b), now) > 0.0);
            }
            buckets.insert(
                key.clone(),
                Bucket {
                    level: level + 1.0,
                    since: now,
                },
            );
        }
        Ok(())
    }

    fn drained(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        bucket.map_or(0.0, |b| {
            (b.level - now.duration_since(b.since).as_secs_f64() * self.limit.per_second).max(0.0)
        })
    }
}

/// Synapse's limits on what an account does, checked by the services before they write. Each
/// check counts the action (as Synapse's `ratelimit()`), so concurrent requests cannot all slip
/// through a look-then-count gap.
///
/// Server admins are exempt from all of them. Synapse exempts an account through a per-user
/// override (`/_synapse/admin/v1/users/<user>/override_ratelimit`), which this server does not
/// have; on an appliance the admins are the box's owners, so they get what that override gives.
/// Whether the user is an admin is read only when a limit refuses, so the common case costs no
/// database read. Actions the server takes itself (a profile change re-sent to every room, the
/// events of a room's creation or upgrade) are not counted one by one, as in Synapse.
pub struct AccountLimits {
    db: Database,
    message: RateLimiter<OwnedUserId>,
    admin_redaction: Option<RateLimiter<OwnedUserId>>,
    local_joins: RateLimiter<OwnedUserId>,
    remote_joins: RateLimiter<OwnedUserId>,
    invites_per_room: RateLimiter<OwnedRoomId>,
    invites_per_user: RateLimiter<OwnedUserId>,
    invites_per_issuer: RateLimiter<OwnedUserId>,
    room_creation: RateLimiter<OwnedUserId>,
    media_create: RateLimiter<OwnedUserId>,
    /// Keyed by user ID, or by client address for requests without a token.
    delayed_event_mgmt: RateLimiter<String>,
    /// Users of application services registered with `rate_limited: false` are exempt too.
    appservices: Option<Arc<crate::services::appservice::AppServices>>,
}

impl AccountLimits {
    pub fn new(db: Database, config: &Config) -> Self {
        Self {
            db,
            message: RateLimiter::new(config.rc_message),
            admin_redaction: config.rc_admin_redaction.map(RateLimiter::new),
            local_joins: RateLimiter::new(config.rc_joins.local),
            remote_joins: RateLimiter::new(config.rc_joins.remote),
            invites_per_room: RateLimiter::new(config.rc_invites.per_room),
            invites_per_user: RateLimiter::new(config.rc_invites.per_user),
            invites_per_issuer: RateLimiter::new(config.rc_invites.per_issuer),
            room_creation: RateLimiter::new(config.rc_room_creation),
            media_create: RateLimiter::new(config.rc_media_create),
            delayed_event_mgmt: RateLimiter::new(config.rc_delayed_event_mgmt),
            appservices: None,
        }
    }

    /// Exempts the users of application services registered with `rate_limited: false`.
    pub fn with_appservices(
        mut self,
        appservices: Arc<crate::services::appservice::AppServices>,
    ) -> Self {
        self.appservices = Some(appservices);
        self
    }

    /// One event sent by `user` (`rc_message`). A redaction of someone else's event counts
    /// against `rc_admin_redaction` instead, when that is set.
    pub async fn event(&self, user: &UserId, redacts_another_sender: bool) -> Result<()> {
        let limiter = match &self.admin_redaction {
            Some(admin_redaction) if redacts_another_sender => admin_redaction,
            _ => &self.message,
        };
        self.take(limiter, &user.to_owned(), user).await
    }

    /// Whether a redaction's target must be looked up: only when `rc_admin_redaction` is set
    /// does it matter whose event is redacted.
    pub fn distinguishes_admin_redactions(&self) -> bool {
        self.admin_redaction.is_some()
    }

    /// A join of a room this server is in (`rc_joins.local`), by a user not joined to it yet:
    /// re-sending one's own join (a profile change) is not a join.
    pub async fn local_join(&self, user: &UserId) -> Result<()> {
        self.take(&self.local_joins, &user.to_owned(), user).await
    }

    /// A join of a room this server is not in, through another server (`rc_joins.remote`).
    pub async fn remote_join(&self, user: &UserId) -> Result<()> {
        self.take(&self.remote_joins, &user.to_owned(), user).await
    }

    /// One invite (`rc_invites`): into `room`, of `invitee`, by `issuer`, checked in that order
    /// as Synapse does (a limit that refuses leaves the ones before it counted).
    pub async fn invite(&self, issuer: &UserId, room: &RoomId, invitee: &UserId) -> Result<()> {
        self.take(&self.invites_per_room, &room.to_owned(), issuer)
            .await?;
        self.take(&self.invites_per_user, &invitee.to_owned(), issuer)
            .await?;
        self.take(&self.invites_per_issuer, &issuer.to_owned(), issuer)
            .await
    }

    /// The invites of a `createRoom` request: as Synapse, more than `rc_invites.per_room`'s
    /// burst at once is refused with `400` (they are sent inside the room's creation and are
    /// not counted one by one).
    pub async fn invites_at_creation(&self, issuer: &UserId, invites: usize) -> Result<()> {
        if invites as f64 <= self.invites_per_room.limit.burst_count || self.exempt(issuer).await? {
            return Ok(());
        }
        Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Cannot invite so many users at once",
        ))
    }

    /// A room created or upgraded by `user`: one `rc_room_creation` and one `rc_message` action
    /// (not one per event written), in Synapse's order: the creation limit is looked at first,
    /// so a refused creation does not spend an event.
    pub async fn room_creation(&self, user: &UserId) -> Result<()> {
        let key = user.to_owned();
        if let Err(refused) = self.room_creation.peek(&key) {
            return if self.exempt(user).await? {
                Ok(())
            } else {
                Err(refused)
            };
        }
        self.event(user, false).await?;
        self.take(&self.room_creation, &key, user).await
    }

    /// One `POST /_matrix/media/v1/create` (`rc_media_create`).
    pub async fn media_create(&self, user: &UserId) -> Result<()> {
        self.take(&self.media_create, &user.to_owned(), user).await
    }

    /// One request managing delayed events (`rc_delayed_event_mgmt`): by `user` when the
    /// request has a token, otherwise by the client's address, as Synapse keys it.
    pub async fn delayed_event_mgmt(&self, user: Option<&UserId>, address: IpAddr) -> Result<()> {
        match user {
            Some(user) => {
                self.take(&self.delayed_event_mgmt, &user.to_string(), user)
                    .await
            }
            None => self.delayed_event_mgmt.take(&address.to_string()),
        }
    }

    /// Counts one action of `actor` under `key`, unless the limit refuses and the actor is not
    /// exempt.
    async fn take<K: Eq + Hash + Clone>(
        &self,
        limiter: &RateLimiter<K>,
        key: &K,
        actor: &UserId,
    ) -> Result<()> {
        match limiter.take(key) {
            Ok(()) => Ok(()),
            Err(_) if self.exempt(actor).await? => Ok(()),
            Err(refused) => Err(refused),
        }
    }

    async fn exempt(&self, user: &UserId) -> Result<bool> {
        if self.appservices.as_ref().is_some_and(|a| a.unlimited(user)) {
            return Ok(true);
        }
        let user = user.to_string();
        self.db
            .read(move |c| crate::storage::directory::is_admin(c, &user).map_err(Error::from))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_with_a_retry_time() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.5,
            burst_count: 3.0,
        });
        for _ in 0..3 {
            limiter.take(&"a").unwrap();
        }
        let err = limiter.take(&"a").unwrap_err();
        assert!(err.to_string().contains("M_LIMIT_EXCEEDED"), "{err}");
        limiter.take(&"b").expect("other keys are not affected");
    }

    #[test]
    fn peek_does_not_spend() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.01,
            burst_count: 1.0,
        });
        for _ in 0..5 {
            limiter.peek(&1).unwrap();
        }
        limiter.record(&1);
        assert!(limiter.peek(&1).is_err());
    }
}
