//! Other servers' signing keys (`ServerKeys`): asked from the server itself
//! (`/_matrix/key/v2/server`, self-signature checked) and, when that fails, from the notaries of
//! `trusted_key_servers` (`/_matrix/key/v2/query`, the notary's signature checked too), kept in
//! the database (`storage/server_keys.rs`) with their validity, and used to check signed events
//! and JSON with ruma's signature code.
//!
//! A server is fetched by one task at a time (the others wait and read what it stored), and not
//! again for `REFETCH_AFTER` once it was asked, whatever the answer: a flood of requests naming an
//! unreachable origin, or a key its server does not have, costs one fetch a minute.
//!
//! Keys are kept in table `server_keys` (migration `0008_server_keys.sql`) with the server's signed
//! answer, which this server hands on as a notary. A key's `valid_until_ts` is capped at a week
//! from the fetch, and enforced for room versions 5 and later ([`ServerKeys::verify_event`];
//! [`ServerKeys::verify_json`] for other signed JSON).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{
        get_remote_server_keys_batch::v2 as query_keys, get_server_keys::v2 as server_keys,
    },
    room_version_rules::RoomVersionRules,
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, Verified},
};

use super::client::FederationClient;
use crate::{
    config::Config,
    error::{Error, Result},
    services::server_key::ServerKey,
    storage::{
        Database, now_ms,
        server_keys::{self as store, StoredServerKey},
    },
};

/// A key answer is small; Synapse's limit for it.
const KEYS_MAX_BYTES: usize = 1024 * 1024;
/// Synapse caps `valid_until_ts` at a week from the fetch (a server cannot make us trust a key
/// for longer without asking again).
const MAX_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A server is not asked again sooner than this after it was asked.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// At most this many keys are taken from one answer.
const MAX_KEYS_PER_ANSWER: usize = 32;
/// The per-server fetch locks kept before idle ones are dropped.
const MAX_TRACKED_SERVERS: usize = 1024;

pub struct ServerKeys {
    db: Database,
    client: Arc<FederationClient>,
    own: Arc<ServerKey>,
    /// This server's `old_signing_keys`: key ID -> (key, expired_ts).
    own_old: BTreeMap<String, (Base64, i64)>,
    notaries: Vec<Notary>,
    /// Per server: when it was last asked (the lock is held during the fetch).
    fetches: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// How many fetches were started (for the tests of deduplication).
    #[cfg(test)]
    attempts: std::sync::atomic::AtomicUsize,
}

struct Notary {
    server_name: OwnedServerName,
    /// `None`: the notary's own keys are fetched from it.
    verify_keys: Option<BTreeMap<String, Base64>>,
}

/// A key answer that passed its checks: the keys to store, and the object (with only its
/// server's signatures) that a notary hands on.
struct CheckedKeys {
    keys: Vec<StoredServerKey>,
    answer: String,
}

impl ServerKeys {
    pub fn new(
        db: Database,
        client: Arc<FederationClient>,
        own: Arc<ServerKey>,
        config: &Config,
    ) -> Self {
        // The config was validated: names and keys parse.
        let own_old = config
            .old_signing_keys
            .iter()
            .filter_map(|(key_id, old)| {
                let key = Base64::parse(&old.key).ok()?;
                Some((key_id.clone(), (key, old.expired_ts as i64)))
            })
            .collect();
        let notaries = config
            .trusted_key_servers
            .iter()
            .filter_map(|notary| {
                Some(Notary {
                    server_name: OwnedServerName::try_from(notary.server_name.as_str()).ok()?,
                    verify_keys: notary.verify_keys.as_ref().map(|keys| {
                        keys.iter()
                            .filter_map(|(id, key)| Some((id.clone(), Base64::parse(key).ok()?)))
                            .collect()
                    }),
                })
            })
            .collect();
        Self {
            db,
            client,
            own,
            own_old,
            notaries,
            fetches: Mutex::default(),
            #[cfg(test)]
            attempts: Default::default(),
        }
    }

    /// The public keys of `server` among `key_ids` (all its keys when empty) that are good for
    /// signatures made at `minimum_valid_until_ts` (ms): from the database, or fetched when one
    /// is missing or too old (directly, then through the notaries). Keys that cannot be found
    /// are left out of the answer; errors are internal failures only.
    pub async fn public_keys(
        &self,
        server: &ServerName,
        key_ids: &[String],
        minimum_valid_until_ts: u64,
    ) -> Result<BTreeMap<String, Base64>> {
        let minimum = i64::try_from(minimum_valid_until_ts).unwrap_or(i64::MAX);
        if server == self.own.server_name() {
            return Ok(self.own_keys(key_ids, minimum));
        }
        let (found, complete) = self.cached(server, key_ids, minimum).await?;
        if complete {
            return Ok(found);
        }
        self.fetch_once(server, key_ids, minimum, true).await?;
        Ok(self.cached(server, key_ids, minimum).await?.0)
    }

    /// Checks the signatures of an event (of the servers the room version requires: the
    /// sender's, the event ID's for v1-2, the `join_authorised_via_users_server`'s) and its
    /// content hash with ruma. `Verified::Signatures` means the content hash does not match:
    /// the caller redacts the event. Keys must be good at the event's `origin_server_ts` when
    /// the room version enforces key validity (v5+). Bad signatures are `403 M_FORBIDDEN`.
    pub async fn verify_event(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<Verified> {
        let servers =
            ruma::signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
                .map_err(|e| forbidden(format!("Cannot check the event's signatures: {e}")))?;
        let minimum = if rules.enforce_key_validity {
            match object.get("origin_server_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
                _ => return Err(forbidden("The event has no origin_server_ts")),
            }
        } else {
            0
        };
        let mut key_map = PublicKeyMap::new();
        for server in servers {
            let key_ids = signature_key_ids(object, &server);
            let keys = self.public_keys(&server, &key_ids, minimum).await?;
            key_map.insert(server.to_string(), keys);
        }
        ruma::signatures::verify_event(&key_map, object, rules)
            .map_err(|e| forbidden(format!("Invalid event signature: {e}")))
    }

    /// Checks that `object` carries a valid signature of `server` (signatures of others are
    /// not looked at), with a key good now. Bad signatures are `403 M_FORBIDDEN`.
    #[allow(dead_code)] // for signed JSON of other servers (invites)
    pub async fn verify_json(
        &self,
        server: &ServerName,
        object: &CanonicalJsonObject,
    ) -> Result<()> {
        let key_ids = signature_key_ids(object, server);
        if key_ids.is_empty() {
            return Err(forbidden(format!("Not signed by {server}")));
        }
        let keys = self
            .public_keys(server, &key_ids, now_ms().max(0) as u64)
            .await?;
        verify_signed_by(object, &[(server, &keys)])
            .map_err(|e| forbidden(format!("Invalid signature of {server}: {e}")))
    }

    /// The signed key objects of `server` a notary answers with (`/_matrix/key/v2/query`): the
    /// server's own signed answers, as it signed them, for `key_ids` (all when empty), fetched
    /// when missing or older than `minimum_valid_until_ts`. The caller adds its signature.
    pub async fn key_objects_for_notary(
        &self,
        server: &ServerName,
        key_ids: &[String],
        minimum_valid_until_ts: u64,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if server != self.own.server_name() {
            self.public_keys(server, key_ids, minimum_valid_until_ts)
                .await?;
        }
        let server = server.to_string();
        let key_ids = key_ids.to_vec();
        let minimum = i64::try_from(minimum_valid_until_ts).unwrap_or(i64::MAX);
        let texts = self
            .db
            .read(move |conn| store::answers_of(conn, &server, &key_ids, minimum))
            .await?;
        Ok(texts
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }

    fn own_keys(&self, key_ids: &[String], minimum: i64) -> BTreeMap<String, Base64> {
        let mut keys = BTreeMap::new();
        keys.insert(
            self.own.key_id(),
            Base64::new(self.own.key_pair().public_key().to_vec()),
        );
        for (key_id, (key, expired_ts)) in &self.own_old {
            if *expired_ts >= minimum {
                keys.insert(key_id.clone(), key.clone());
            }
        }
        keys.retain(|key_id, _| key_ids.is_empty() || key_ids.contains(key_id));
        keys
    }

    /// The stored keys of `server` good at `minimum`, and whether they are all that was asked
    /// for (for an empty `key_ids`: whether any is).
    async fn cached(
        &self,
        server: &ServerName,
        key_ids: &[String],
        minimum: i64,
    ) -> Result<(BTreeMap<String, Base64>, bool)> {
        let name = server.to_string();
        let stored = self
            .db
            .read(move |conn| store::keys_of(conn, &name))
            .await?;
        let found: BTreeMap<String, Base64> = stored
            .into_iter()
            .filter(|key| key.good_until_ts() >= minimum)
            .filter(|key| key_ids.is_empty() || key_ids.contains(&key.key_id))
            .filter_map(|key| Some((key.key_id, Base64::parse(&key.key).ok()?)))
            .collect();
        let complete = if key_ids.is_empty() {
            !found.is_empty()
        } else {
            key_ids.iter().all(|id| found.contains_key(id))
        };
        Ok((found, complete))
    }

    /// Fetches `server`'s keys unless another task is fetching them (then waits for it) or
    /// they were fetched within `REFETCH_AFTER`.
    async fn fetch_once(
        &self,
        server: &ServerName,
        key_ids: &[String],
        minimum: i64,
        through_notaries: bool,
    ) -> Result<()> {
        let lock = self.fetch_lock(server);
        let mut last_fetch = lock.lock().await;
        if self.cached(server, key_ids, minimum).await?.1 {
            return Ok(());
        }
        if last_fetch.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            tracing::debug!(%server, "keys fetched a moment ago; not asking again yet");
            return Ok(());
        }
        *last_fetch = Some(Instant::now());
        #[cfg(test)]
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.fetch_direct(server).await {
            Ok(checked) => self.store(server, vec![checked]).await?,
            Err(reason) => tracing::info!(%server, "cannot fetch the server's keys: {reason}"),
        }
        if !through_notaries || self.cached(server, key_ids, minimum).await?.1 {
            return Ok(());
        }
        for notary in &self.notaries {
            if notary.server_name == server {
                continue;
            }
            match self
                .fetch_from_notary(notary, server, key_ids, minimum)
                .await
            {
                Ok(answers) => self.store(server, answers).await?,
                Err(reason) => tracing::info!(
                    %server, notary = %notary.server_name,
                    "cannot fetch the server's keys through the notary: {reason}"
                ),
            }
            if self.cached(server, key_ids, minimum).await?.1 {
                break;
            }
        }
        Ok(())
    }

    fn fetch_lock(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<Option<Instant>>> {
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        if fetches.len() >= MAX_TRACKED_SERVERS {
            // Forget servers nobody is fetching whose last fetch is old enough to be repeated.
            fetches.retain(|_, lock| {
                Arc::strong_count(lock) > 1
                    || lock
                        .try_lock()
                        .map_or(true, |at| at.is_some_and(|at| at.elapsed() < REFETCH_AFTER))
            });
        }
        fetches.entry(server.to_owned()).or_default().clone()
    }

    async fn store(&self, server: &ServerName, answers: Vec<CheckedKeys>) -> Result<()> {
        let name = server.to_string();
        let now = now_ms();
        self.db
            .write(move |tx| {
                answers.iter().try_for_each(|checked| {
                    store::put(tx, &name, &checked.keys, &checked.answer, now)
                })
            })
            .await?;
        Ok(())
    }

    /// `GET /_matrix/key/v2/server` of the server itself.
    async fn fetch_direct(&self, server: &ServerName) -> Result<CheckedKeys, String> {
        let response = self
            .client
            .send_with_limit(server, server_keys::Request::new(), KEYS_MAX_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let object = to_object(&response.server_key)?;
        check_server_keys(&object, server, None, now_ms())
    }

    /// `POST /_matrix/key/v2/query` to a notary, its answer checked: the server's own
    /// signature and the notary's.
    async fn fetch_from_notary(
        &self,
        notary: &Notary,
        server: &ServerName,
        key_ids: &[String],
        minimum: i64,
    ) -> Result<Vec<CheckedKeys>, String> {
        let mut criteria = query_keys::QueryCriteria::new();
        criteria.minimum_valid_until_ts = Some(MilliSecondsSinceUnixEpoch(
            ruma::UInt::try_from(minimum.max(0)).unwrap_or(ruma::UInt::MAX),
        ));
        let wanted: BTreeMap<OwnedServerSigningKeyId, query_keys::QueryCriteria> = key_ids
            .iter()
            .filter_map(|id| {
                Some((
                    OwnedServerSigningKeyId::try_from(id.as_str()).ok()?,
                    criteria.clone(),
                ))
            })
            .collect();
        let request = query_keys::Request::new(BTreeMap::from([(server.to_owned(), wanted)]));
        let response = self
            .client
            .send_with_limit(&notary.server_name, request, KEYS_MAX_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let notary_keys = match &notary.verify_keys {
            Some(keys) => keys.clone(),
            None => self.notary_own_keys(&notary.server_name).await?,
        };
        let mut answers = Vec::new();
        for raw in response.server_keys.iter().take(MAX_KEYS_PER_ANSWER) {
            let Ok(object) = to_object(raw) else { continue };
            if object.get("server_name") != Some(&CanonicalJsonValue::String(server.to_string())) {
                continue;
            }
            answers.push(check_server_keys(
                &object,
                server,
                Some((&notary.server_name, &notary_keys)),
                now_ms(),
            )?);
        }
        if answers.is_empty() {
            return Err(format!("{} has no keys of {server}", notary.server_name));
        }
        Ok(answers)
    }

    /// A notary's own keys (no `verify_keys` configured): fetched from it directly, never
    /// through another notary.
    async fn notary_own_keys(
        &self,
        notary: &ServerName,
    ) -> Result<BTreeMap<String, Base64>, String> {
        let now = now_ms();
        let (found, complete) = self
            .cached(notary, &[], now)
            .await
            .map_err(|e| e.to_string())?;
        if complete {
            return Ok(found);
        }
        Box::pin(self.fetch_once(notary, &[], now, false))
            .await
            .map_err(|e| e.to_string())?;
        let (found, _) = self
            .cached(notary, &[], now)
            .await
            .map_err(|e| e.to_string())?;
        if found.is_empty() {
            return Err(format!("no keys of the notary {notary}"));
        }
        Ok(found)
    }
}

fn forbidden(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::forbidden(message)
}

fn to_object<T>(raw: &Raw<T>) -> Result<CanonicalJsonObject, String> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| format!("the keys are not canonical JSON: {e}"))
}

/// The key IDs of `server`'s signatures on `object`.
fn signature_key_ids(object: &CanonicalJsonObject, server: &ServerName) -> Vec<String> {
    object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .map(|set| set.keys().cloned().collect())
        .unwrap_or_default()
}

/// Verifies the signatures of the given servers on `object` (each must have signed with one of
/// its given keys), ignoring the signatures of anyone else.
fn verify_signed_by(
    object: &CanonicalJsonObject,
    signers: &[(&ServerName, &BTreeMap<String, Base64>)],
) -> Result<(), String> {
    let signatures = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .ok_or("no signatures")?;
    let mut only_these = CanonicalJsonObject::new();
    let mut key_map = PublicKeyMap::new();
    for (server, keys) in signers {
        let set = signatures
            .get(server.as_str())
            .ok_or_else(|| format!("not signed by {server}"))?;
        only_these.insert(server.to_string(), set.clone());
        key_map.insert(server.to_string(), (*keys).clone());
    }
    let mut copy = object.clone();
    copy.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(only_these),
    );
    ruma::signatures::verify_json(&key_map, &copy).map_err(|e| e.to_string())
}

/// Checks a server's key object (`/_matrix/key/v2/server` or a notary's entry for it): about
/// `server`, signed by every key of its `verify_keys`, and by the notary if one handed it on;
/// keys good until `valid_until_ts`, at most a week from now (old keys until `expired_ts`).
fn check_server_keys(
    object: &CanonicalJsonObject,
    server: &ServerName,
    notary: Option<(&ServerName, &BTreeMap<String, Base64>)>,
    now: i64,
) -> Result<CheckedKeys, String> {
    if object.get("server_name") != Some(&CanonicalJsonValue::String(server.to_string())) {
        return Err(format!("the keys are not about {server}"));
    }
    let integer = |value: Option<&CanonicalJsonValue>| match value {
        Some(CanonicalJsonValue::Integer(ts)) => Some(i64::from(*ts)),
        _ => None,
    };
    let valid_until_ts =
        integer(object.get("valid_until_ts")).ok_or("the keys have no valid_until_ts")?;
    let key_of = |key: &CanonicalJsonValue| -> Option<(String, Base64)> {
        let CanonicalJsonValue::String(text) = key.as_object()?.get("key")? else {
            return None;
        };
        Some((text.clone(), Base64::parse(text).ok()?))
    };
    let verify_keys = object
        .get("verify_keys")
        .and_then(CanonicalJsonValue::as_object)
        .ok_or("the keys have no verify_keys")?;
    let old_verify_keys = match object.get("old_verify_keys") {
        Some(CanonicalJsonValue::Object(old)) => old.clone(),
        _ => CanonicalJsonObject::new(),
    };
    if verify_keys.len() + old_verify_keys.len() > MAX_KEYS_PER_ANSWER {
        return Err(format!("more than {MAX_KEYS_PER_ANSWER} keys"));
    }
    let mut public = BTreeMap::new();
    let mut keys = Vec::new();
    let valid_until_ts = valid_until_ts.min(now.saturating_add(MAX_VALIDITY_MS));
    for (key_id, key) in verify_keys {
        let (text, decoded) =
            key_of(key).ok_or_else(|| format!("verify key {key_id} is not a key"))?;
        public.insert(key_id.clone(), decoded);
        keys.push(StoredServerKey {
            key_id: key_id.clone(),
            key: text,
            valid_until_ts,
            expired_ts: None,
        });
    }
    let own_signatures = signature_key_ids(object, server);
    if let Some(unsigned) = public.keys().find(|id| !own_signatures.contains(id)) {
        return Err(format!(
            "the keys are not signed by {server}'s key {unsigned}"
        ));
    }
    if public.is_empty() {
        return Err("the answer has no verify_keys".to_owned());
    }
    let mut signers = vec![(server, &public)];
    if let Some((notary, notary_keys)) = notary
        && notary != server
    {
        signers.push((notary, notary_keys));
    }
    verify_signed_by(object, &signers)?;
    for (key_id, old) in &old_verify_keys {
        let (Some((text, _)), Some(expired_ts)) = (
            key_of(old),
            integer(old.as_object().and_then(|o| o.get("expired_ts"))),
        ) else {
            continue;
        };
        if public.contains_key(key_id) {
            continue;
        }
        keys.push(StoredServerKey {
            key_id: key_id.clone(),
            key: text,
            valid_until_ts: expired_ts,
            expired_ts: Some(expired_ts),
        });
    }
    // What a notary hands on: the server's own signatures only.
    let mut answer = object.clone();
    if let Some(own) = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(server.as_str()))
    {
        answer.insert(
            "signatures".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                server.to_string(),
                own.clone(),
            )])),
        );
    }
    let answer = serde_json::to_string(&answer).map_err(|e| e.to_string())?;
    Ok(CheckedKeys { keys, answer })
}

#[cfg(test)]
mod tests {
    use ruma::{room_version_rules::RoomVersionRules, server_name, signatures::Ed25519KeyPair};
    use serde_json::json;

    use super::*;

    fn key_pair(version: &str) -> Ed25519KeyPair {
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).unwrap()
    }

    fn public(pair: &Ed25519KeyPair) -> String {
        Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode()
    }

    fn keys_object(
        server: &str,
        pair: &Ed25519KeyPair,
        valid_until_ts: i64,
    ) -> CanonicalJsonObject {
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server,
            "verify_keys": {format!("ed25519:{}", pair.version()): {"key": public(pair)}},
            "old_verify_keys": {"ed25519:old": {"key": public(&key_pair("old")), "expired_ts": 1000}},
            "valid_until_ts": valid_until_ts,
        }))
        .unwrap();
        ruma::signatures::sign_json(server, pair, &mut object).unwrap();
        object
    }

    /// A server's own answer: its self-signature is required, validity is capped at a week,
    /// old keys are good until they expired, and a notary's signature is checked when it
    /// handed the keys on.
    #[test]
    fn key_answers_are_checked() {
        let remote = server_name!("remote.test");
        let pair = key_pair("a");
        let now = 1_000_000;
        let object = keys_object("remote.test", &pair, 1 << 50);
        let checked = check_server_keys(&object, remote, None, now).unwrap();
        assert_eq!(checked.keys.len(), 2);
        assert_eq!(checked.keys[0].key_id, "ed25519:a");
        assert_eq!(checked.keys[0].valid_until_ts, now + MAX_VALIDITY_MS);
        assert_eq!(checked.keys[1].good_until_ts(), 1000);

        // About another server, or signed by another key: refused.
        assert!(check_server_keys(&object, server_name!("other.test"), None, now).is_err());
        let mut forged = keys_object("remote.test", &pair, 5000);
        forged.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(9000u32.into()),
        );
        assert!(check_server_keys(&forged, remote, None, now).is_err());
        let mut unsigned = object.clone();
        unsigned.remove("signatures");
        assert!(check_server_keys(&unsigned, remote, None, now).is_err());

        // Handed on by a notary: its signature is required too.
        let notary = server_name!("notary.test");
        let notary_pair = key_pair("n");
        let notary_keys = BTreeMap::from([(
            "ed25519:n".to_owned(),
            Base64::new(notary_pair.public_key().to_vec()),
        )]);
        assert!(check_server_keys(&object, remote, Some((notary, &notary_keys)), now).is_err());
        let mut notarised = object.clone();
        ruma::signatures::sign_json("notary.test", &notary_pair, &mut notarised).unwrap();
        let checked =
            check_server_keys(&notarised, remote, Some((notary, &notary_keys)), now).unwrap();
        // What is handed on carries the server's own signature only.
        let answer: serde_json::Value = serde_json::from_str(&checked.answer).unwrap();
        assert_eq!(
            answer["signatures"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["remote.test"]
        );
        let other_notary = key_pair("n");
        let mut wrongly = object.clone();
        ruma::signatures::sign_json("notary.test", &other_notary, &mut wrongly).unwrap();
        assert!(check_server_keys(&wrongly, remote, Some((notary, &notary_keys)), now).is_err());
    }

    /// Concurrent requests for an unreachable server's keys make one fetch, and the failure is
    /// remembered: asking again at once fetches nothing.
    #[tokio::test]
    async fn fetches_are_shared_and_failures_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "server_name: origin.test\ntrusted_key_servers: []\n",
            std::path::Path::new("c.yaml"),
        )
        .unwrap();
        let name = OwnedServerName::try_from("origin.test").unwrap();
        let own = Arc::new(ServerKey::load_or_create(dir.path(), &name).unwrap());
        let db = Database::open(&dir.path().join("appliance.db")).unwrap();
        let client = Arc::new(FederationClient::new(&config, Some(own.clone())).unwrap());
        let keys = Arc::new(ServerKeys::new(db, client, own, &config));
        // Loopback is refused by the default IP policy: the fetch fails at once.
        let unreachable = server_name!("127.0.0.1:1");
        let key_ids = vec!["ed25519:a".to_owned()];
        let asks = (0..10).map(|_| {
            let keys = keys.clone();
            let key_ids = key_ids.clone();
            tokio::spawn(async move { keys.public_keys(unreachable, &key_ids, 0).await })
        });
        let asks: Vec<_> = asks.collect();
        for ask in asks {
            assert!(ask.await.unwrap().unwrap().is_empty());
        }
        assert!(
            keys.public_keys(unreachable, &key_ids, 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(keys.attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Events and JSON signed by this server verify without a fetch; a changed event does not,
    /// a changed content hash is `Verified::Signatures`.
    #[tokio::test]
    async fn own_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Config::parse("server_name: origin.test\n", std::path::Path::new("c.yaml")).unwrap();
        let name = OwnedServerName::try_from("origin.test").unwrap();
        let own = Arc::new(ServerKey::load_or_create(dir.path(), &name).unwrap());
        let db = Database::open(&dir.path().join("appliance.db")).unwrap();
        let client = Arc::new(FederationClient::new(&config, Some(own.clone())).unwrap());
        let keys = ServerKeys::new(db, client, own.clone(), &config);
        let rules = RoomVersionRules::V11;
        let mut event: CanonicalJsonObject = serde_json::from_value(json!({
            "auth_events": [], "prev_events": [], "depth": 1,
            "content": {"body": "hi", "msgtype": "m.text"},
            "origin_server_ts": 1_700_000_000_000u64,
            "room_id": "!r:origin.test", "sender": "@a:origin.test", "type": "m.room.message",
        }))
        .unwrap();
        ruma::signatures::hash_and_sign_event(
            "origin.test",
            own.key_pair(),
            &mut event,
            &rules.redaction,
        )
        .unwrap();
        assert_eq!(
            keys.verify_event(&event, &rules).await.unwrap(),
            Verified::All
        );
        let mut changed_content = event.clone();
        changed_content.insert(
            "content".to_owned(),
            serde_json::from_value(json!({"body": "bye", "msgtype": "m.text"})).unwrap(),
        );
        assert_eq!(
            keys.verify_event(&changed_content, &rules).await.unwrap(),
            Verified::Signatures
        );
        let mut changed = event.clone();
        changed.insert(
            "type".to_owned(),
            CanonicalJsonValue::String("m.room.other".into()),
        );
        assert!(keys.verify_event(&changed, &rules).await.is_err());

        let mut object: CanonicalJsonObject =
            serde_json::from_value(json!({"mxid": "@a:origin.test"})).unwrap();
        own.sign_json(&mut object).unwrap();
        keys.verify_json(&name, &object).await.unwrap();
        object.insert(
            "mxid".to_owned(),
            CanonicalJsonValue::String("@b:origin.test".into()),
        );
        assert!(keys.verify_json(&name, &object).await.is_err());
    }
}
