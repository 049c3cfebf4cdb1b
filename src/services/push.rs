//! Push rules and the notification counts computed from them.
//!
//! A user's ruleset is global account data of type `m.push_rules` with content
//! `{"global": <ruleset>}`, as Synapse shows it in /sync. A user who never changed a rule has no
//! row: ruma's server-default rules for the user apply. Every read merges the stored ruleset with
//! the current server defaults (`Ruleset::update_with_server_default`), so rules added to the
//! defaults later reach existing users while their changes to default rules (enabled, actions)
//! are kept. All rule logic (ordering, `before`/`after`, matching) is ruma's.
//!
//! Notification counts are not stored: /sync evaluates the user's current rules over the unread
//! events among the newest [`MAX_EVALUATED`] events of each joined room, judged against the read
//! receipts and the user's own events. What an event's actions are for a user is remembered
//! ([`EvaluatedActions`]), so each event is run through the rules once per ruleset, not once
//! per /sync.
//!
//! A first /sync carries `m.push_rules` even for a user who never changed a rule. Every change
//! (`insert` with `before`/`after`, `remove`, `set_enabled`, `set_actions`, all ruma's) is a
//! read-modify-write in one transaction. The defaults are the current spec's: intentional mentions
//! (`m.mentions`) highlight; the legacy display-name and user-name rules are gone from the spec
//! (MSC4210), though a user may still add a `contains_display_name` rule, which sees the user's
//! display name in the room.
//!
//! Counts ([`unread_counts`]): the newest events since the user's latest membership event
//! (`storage/push.rs`: one range scan of the room's stream index, which carries sender, relation
//! and redaction, so no event row or JSON is read until an event's outcome is not remembered yet;
//! receipts are compared in Rust, no temporary tables), less those covered by an `m.read` /
//! `m.read.private` receipt (`main` or the event's thread) or followed by an event of the user in
//! the same thread (sending is reading, as in Synapse), and those of users the reader ignores
//! (Synapse does not count them either), are run through `Ruleset::get_actions` with
//! the room's member count, the user's display name and the power levels. `notify` counts; the
//! `highlight` tweak counts as a highlight too. With `unread_thread_notifications` in the filter,
//! the room's counts are the main timeline's and each thread root gets its own. Because the current
//! rules are used, changing a rule re-counts events still unread (Synapse keeps the actions
//! computed when the event arrived). [`EvaluatedActions`] is bounded (about 1 MiB); remembering cut
//! what was 70 % of an initial sync's time. The room context (member count, display name, power
//! levels) is that of the first evaluation, as with Synapse's stored actions.
//!
//! Push delivery and `/notifications` (`services/pushers/`) judge events with the same
//! evaluation ([`notifying_actions`], [`unread_positions`], [`badge`]), so that what a phone is
//! pushed, what `/notifications` lists and what /sync counts agree.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState},
    sync::Mutex,
};

use futures_util::FutureExt;
use ruma::{
    OwnedEventId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{push::PushRule, sync::sync_events::UnreadNotificationsCount},
    events::{push_rules::PushRulesEventContent, room::member::MembershipState},
    push::{
        Action, InsertPushRuleError, NewPushRule, PushConditionRoomCtx, RemovePushRuleError,
        RuleKind, Ruleset,
    },
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::{
    Services, json_depth,
    rooms::{power_levels, stored},
};
use crate::{
    error::{Error, Result},
    storage::{account_data as data_store, push as store, rooms as room_store},
};

/// The account data type that holds a user's push rules.
pub const EVENT_TYPE: &str = "m.push_rules";

/// Most events (the user's own included) looked at per room and sync, newest first: counts stop
/// growing past it.
pub const MAX_EVALUATED: usize = 100;

/// What the push rules said about events, per user, ruleset and event: an event's actions do not
/// change once it is stored (Synapse likewise works them out once, when the event arrives), so
/// /sync only evaluates the events it has not evaluated before. Bounded: when full it starts
/// afresh, which costs one evaluation per event again.
pub struct EvaluatedActions {
    keys: RandomState,
    outcomes: Mutex<HashMap<u64, Outcome>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Silent,
    Notify,
    Highlight,
}

/// At 16 bytes an entry, at most about 1 MiB.
const EVALUATED_CAPACITY: usize = 65_536;

impl Default for EvaluatedActions {
    fn default() -> Self {
        Self {
            keys: RandomState::new(),
            outcomes: Mutex::new(HashMap::new()),
        }
    }
}

impl EvaluatedActions {
    /// The key of one event for one user under one ruleset. Keys are hashed with a per-process
    /// random key, so nobody can craft two events that share one.
    fn key(&self, rules: &UserRules, user: &UserId, stream_ordering: i64) -> u64 {
        self.keys
            .hash_one((rules.fingerprint, user.as_str(), stream_ordering))
    }

    fn get(&self, key: u64) -> Option<Outcome> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }

    fn insert(&self, key: u64, outcome: Outcome) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        if outcomes.len() >= EVALUATED_CAPACITY {
            outcomes.clear();
        }
        outcomes.insert(key, outcome);
    }
}

/// A user's ruleset with a fingerprint of what it was made from (the stored content), and the
/// users they ignore: events of those never notify (as in Synapse), whatever the rules say.
pub struct UserRules {
    pub ruleset: Ruleset,
    fingerprint: u64,
    ignored: HashSet<String>,
}

/// The user's ruleset, for counting notifications.
pub fn load_for_counting(conn: &Connection, user: &UserId) -> Result<UserRules> {
    let stored = data_store::get(conn, user.as_str(), "", EVENT_TYPE)?;
    // Stable across calls (unlike a `RandomState`), so the same content gives the same key.
    let mut hasher = DefaultHasher::new();
    stored.hash(&mut hasher);
    let fingerprint = hasher.finish();
    Ok(UserRules {
        ruleset: ruleset_from_content(user, stored.as_deref()),
        fingerprint,
        ignored: super::ignored::ignored_users(conn, user.as_str())?,
    })
}

/// The ruleset stored in account data content, merged with the current server defaults.
/// Unreadable content (written through the generic account data API) counts as no content.
pub fn ruleset_from_content(user: &UserId, content: Option<&str>) -> Ruleset {
    let defaults = Ruleset::server_default(user);
    let Some(content) = content else {
        return defaults;
    };
    if json_depth::nesting_depth(content) > json_depth::MAX_DEPTH {
        // Stored by an older version; /sync leaves the event out, and the next change replaces it.
        if json_depth::first_time(&format!("m.push_rules of {user}")) {
            tracing::warn!(%user, "m.push_rules nested too deep; using the defaults");
        }
        return defaults;
    }
    match serde_json::from_str::<PushRulesEventContent>(content) {
        Ok(stored) => {
            let mut ruleset = stored.global;
            ruleset.update_with_server_default(defaults);
            ruleset
        }
        Err(e) => {
            tracing::warn!(%user, error = %e, "unreadable m.push_rules; using the defaults");
            defaults
        }
    }
}

/// The account data content of a ruleset.
pub fn content(ruleset: Ruleset) -> Result<Value> {
    serde_json::to_value(PushRulesEventContent::new(ruleset)).map_err(Error::internal)
}

/// The `m.push_rules` account data event a first /sync shows for a user who never changed a rule.
pub fn default_event(user: &UserId) -> Result<Value> {
    Ok(json!({"type": EVENT_TYPE, "content": content(Ruleset::server_default(user))?}))
}

/// The user's ruleset, read with an open connection (for /sync).
pub fn load(conn: &Connection, user: &UserId) -> Result<Ruleset> {
    let stored = data_store::get(conn, user.as_str(), "", EVENT_TYPE)?;
    Ok(ruleset_from_content(user, stored.as_deref()))
}

/// The user's ruleset.
pub async fn ruleset(services: &Services, user: &UserId) -> Result<Ruleset> {
    let user = user.to_owned();
    services.db.read(move |c| load(c, &user)).await
}

/// Changes the user's ruleset in one transaction (so that concurrent changes are not lost),
/// stores it and wakes /sync.
async fn modify<T: Send + 'static>(
    services: &Services,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<T> + Send + 'static,
) -> Result<T> {
    let user: OwnedUserId = user.to_owned();
    let (value, position) = services
        .db
        .write(move |tx| {
            let mut ruleset = load(tx, &user)?;
            let value = change(&mut ruleset)?;
            // Custom actions, tweak values and conditions hold any JSON; /sync shows the rules
            // 4 levels further down.
            let content = content(ruleset)?;
            json_depth::check("A push rule", &content)?;
            let content = serde_json::to_string(&content).map_err(Error::internal)?;
            let position = data_store::put(tx, user.as_str(), "", EVENT_TYPE, &content)?;
            Ok::<_, Error>((value, position))
        })
        .await?;
    services.rooms.notify(position);
    Ok(value)
}

fn unknown_rule() -> Error {
    Error::not_found("Unknown push rule")
}

/// One rule, as `GET /pushrules/global/{kind}/{ruleId}` shows it.
pub async fn rule(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
) -> Result<PushRule> {
    let ruleset = ruleset(services, user).await?;
    ruleset
        .get(kind, rule_id)
        .map(|rule| rule.to_owned().into())
        .ok_or_else(unknown_rule)
}

/// Adds or replaces a user-defined rule, placed by `before` / `after` (rule IDs of the same kind).
pub async fn set_rule(
    services: &Services,
    user: &UserId,
    rule: NewPushRule,
    before: Option<String>,
    after: Option<String>,
) -> Result<()> {
    modify(services, user, move |ruleset| {
        ruleset
            .insert(rule, after.as_deref(), before.as_deref())
            .map_err(|e| match e {
                InsertPushRuleError::UnknownRuleId => {
                    Error::not_found("The rule named by `before` or `after` does not exist")
                }
                InsertPushRuleError::ServerDefaultRuleId => Error::invalid_param(
                    "Rule IDs starting with `.` are reserved for server-default rules",
                ),
                InsertPushRuleError::RelativeToServerDefaultRule => {
                    Error::invalid_param("`before` and `after` cannot name a server-default rule")
                }
                other => Error::invalid_param(format!("Invalid push rule: {other}")),
            })
    })
    .await
}

/// Removes a user-defined rule; server-default rules cannot be removed.
pub async fn delete_rule(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
) -> Result<()> {
    let rule_id = rule_id.to_owned();
    modify(services, user, move |ruleset| {
        ruleset.remove(kind, &rule_id).map_err(|e| match e {
            RemovePushRuleError::ServerDefault => {
                Error::invalid_param("Server-default rules cannot be deleted")
            }
            RemovePushRuleError::NotFound => unknown_rule(),
            other => Error::invalid_param(format!("Cannot delete the rule: {other}")),
        })
    })
    .await
}

pub async fn enabled(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
) -> Result<bool> {
    let ruleset = ruleset(services, user).await?;
    ruleset
        .get(kind, rule_id)
        .map(|rule| rule.enabled())
        .ok_or_else(unknown_rule)
}

pub async fn set_enabled(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
    enabled: bool,
) -> Result<()> {
    let rule_id = rule_id.to_owned();
    modify(services, user, move |ruleset| {
        ruleset
            .set_enabled(kind, &rule_id, enabled)
            .map_err(|_| unknown_rule())
    })
    .await
}

pub async fn actions(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
) -> Result<Vec<Action>> {
    let ruleset = ruleset(services, user).await?;
    ruleset
        .get(kind, rule_id)
        .map(|rule| rule.actions().to_vec())
        .ok_or_else(unknown_rule)
}

pub async fn set_actions(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    let rule_id = rule_id.to_owned();
    modify(services, user, move |ruleset| {
        ruleset
            .set_actions(kind, &rule_id, actions)
            .map_err(|_| unknown_rule())
    })
    .await
}

// ---- notification counts ----

/// A room's unread notification counts for one user.
#[derive(Debug, Default)]
pub struct UnreadCounts {
    /// Every unread notification of the room, threads included.
    pub all: Counter,
    /// Unread notifications outside threads.
    pub main: Counter,
    /// Unread notifications per thread root.
    pub threads: BTreeMap<OwnedEventId, Counter>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub notifications: u64,
    pub highlights: u64,
}

impl Counter {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        if highlight {
            self.highlights += 1;
        }
    }

    /// Both counts, as /sync reports them.
    pub fn to_sync(self) -> UnreadNotificationsCount {
        let mut count = UnreadNotificationsCount::new();
        count.notification_count = Some(UInt::try_from(self.notifications).unwrap_or(UInt::MAX));
        count.highlight_count = Some(UInt::try_from(self.highlights).unwrap_or(UInt::MAX));
        count
    }
}

/// What `user` has not read yet in a room they are joined to, up to stream position `upto`:
/// each unread event from others since the user's latest membership event (their join) is run
/// through the ruleset, and those whose actions include `notify` count (as highlights too when
/// they set the `highlight` tweak).
///
/// Read means covered by a read receipt (unthreaded, or of the event's thread / the main
/// timeline) or followed by an event the user sent in the same thread (or in the main timeline):
/// as in Synapse, sending is reading.
pub fn unread_counts(
    conn: &Connection,
    room_id: &RoomId,
    user: &UserId,
    upto: i64,
    rules: &UserRules,
    evaluated: &EvaluatedActions,
) -> Result<UnreadCounts> {
    let mut counts = UnreadCounts::default();
    // Read only when an event has to be evaluated.
    let mut context = None;
    for event in unread_events(conn, room_id, user, upto)? {
        if rules.ignored.contains(&event.sender) {
            continue;
        }
        let key = evaluated.key(rules, user, event.stream_ordering);
        let outcome = match evaluated.get(key) {
            Some(outcome) => outcome,
            None => {
                let context = match &mut context {
                    Some(context) => context,
                    None => context.insert(room_context(conn, room_id, user)?),
                };
                let Some(json) = store::event_json(conn, event.stream_ordering)? else {
                    continue;
                };
                let outcome = evaluate(&rules.ruleset, context, json);
                evaluated.insert(key, outcome);
                outcome
            }
        };
        let highlight = match outcome {
            Outcome::Silent => continue,
            Outcome::Notify => false,
            Outcome::Highlight => true,
        };
        counts.all.add(highlight);
        match event
            .thread_root
            .and_then(|root| OwnedEventId::try_from(root).ok())
        {
            Some(root) => counts.threads.entry(root).or_default().add(highlight),
            None => counts.main.add(highlight),
        }
    }
    Ok(counts)
}

/// The events of a room that are unread for `user` (newest first, at most [`MAX_EVALUATED`]
/// looked at), before their rules are run: from others, since the user's latest membership
/// event, not covered by a read receipt nor followed by the user's own event in the same thread.
fn unread_events(
    conn: &Connection,
    room_id: &RoomId,
    user: &UserId,
    upto: i64,
) -> Result<Vec<store::UnreadEvent>> {
    let joined_at = match room_store::membership(conn, room_id.as_str(), user.as_str())? {
        Some(m) if m.membership == MembershipState::Join.as_str() => m.stream_ordering,
        _ => return Ok(Vec::new()),
    };
    let events = store::unread_events(
        conn,
        room_id.as_str(),
        user.as_str(),
        joined_at,
        upto,
        MAX_EVALUATED,
    )?;
    // Threads (`None`: the main timeline) in which the user sent something newer.
    let mut answered: HashSet<Option<String>> = HashSet::new();
    Ok(events
        .into_iter()
        .filter(|event| {
            if event.own {
                answered.insert(event.thread_root.clone());
                return false;
            }
            !answered.contains(&event.thread_root)
        })
        .collect())
}

/// The stream positions of the events /sync would count as unread in a room if their rules
/// notify ([`unread_counts`]): `/notifications` marks the others `read`.
pub fn unread_positions(
    conn: &Connection,
    room_id: &RoomId,
    user: &UserId,
    upto: i64,
) -> Result<HashSet<i64>> {
    Ok(unread_events(conn, room_id, user, upto)?
        .into_iter()
        .map(|event| event.stream_ordering)
        .collect())
}

/// Runs one event through the ruleset.
fn evaluate(ruleset: &Ruleset, context: &PushConditionRoomCtx, json: String) -> Outcome {
    outcome_of(&evaluate_actions(ruleset, context, json))
}

/// The actions the ruleset gives one event.
fn evaluate_actions(
    ruleset: &Ruleset,
    context: &PushConditionRoomCtx,
    json: String,
) -> Vec<Action> {
    // ruma flattens the event with serde_json and panics when it cannot (nested too deep, only
    // from an older version); such an event is never shown, so it never notifies either.
    if stored::nesting_depth(&json) > stored::MAX_EVENT_DEPTH {
        return Vec::new();
    }
    let raw: Raw<Value> = match serde_json::value::RawValue::from_string(json) {
        Ok(json) => Raw::from_json(json),
        Err(_) => return Vec::new(),
    };
    // The rules run synchronously: without thread subscriptions (MSC4306) no condition waits.
    ruleset
        .get_actions(&raw, context)
        .now_or_never()
        .unwrap_or_default()
        .to_vec()
}

fn outcome_of(actions: &[Action]) -> Outcome {
    if !actions.iter().any(Action::should_notify) {
        Outcome::Silent
    } else if actions.iter().any(Action::is_highlight) {
        Outcome::Highlight
    } else {
        Outcome::Notify
    }
}

/// The actions of one event for `user` when they notify (`None`: silent), by the same rules and
/// evaluation as the counts of [`unread_counts`], so that pushes, `/notifications` and /sync's
/// counts agree. `contexts` keeps each room's context between calls of one batch.
pub fn notifying_actions(
    conn: &Connection,
    room_id: &RoomId,
    user: &UserId,
    stream_ordering: i64,
    rules: &UserRules,
    evaluated: &EvaluatedActions,
    contexts: &mut HashMap<ruma::OwnedRoomId, PushConditionRoomCtx>,
) -> Result<Option<Vec<Action>>> {
    let key = evaluated.key(rules, user, stream_ordering);
    if evaluated.get(key) == Some(Outcome::Silent) {
        return Ok(None);
    }
    let context = match contexts.get(room_id) {
        Some(context) => context,
        None => contexts
            .entry(room_id.to_owned())
            .or_insert(room_context(conn, room_id, user)?),
    };
    let Some(json) = store::event_json(conn, stream_ordering)? else {
        return Ok(None);
    };
    // Not remembered as an outcome: un-ignoring the sender makes the event count again.
    if !rules.ignored.is_empty()
        && stored::Envelope::parse(&json)
            .and_then(|envelope| envelope.sender)
            .is_some_and(|sender| rules.ignored.contains(&sender))
    {
        return Ok(None);
    }
    let actions = evaluate_actions(&rules.ruleset, context, json);
    let outcome = outcome_of(&actions);
    evaluated.insert(key, outcome);
    Ok((outcome != Outcome::Silent).then_some(actions))
}

/// The badge of a push (the `unread` count of the Push Gateway API), as Synapse counts it by
/// default: the rooms with unread notifications (those /sync counts), plus pending invites.
pub fn badge(
    conn: &Connection,
    user: &UserId,
    upto: i64,
    rules: &UserRules,
    evaluated: &EvaluatedActions,
) -> Result<u64> {
    let (joined, invites) = crate::storage::pushers::joined_rooms_and_invites(conn, user.as_str())?;
    let mut badge = invites;
    for room_id in joined {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room_id) else {
            continue;
        };
        let counts = unread_counts(conn, &room_id, user, upto, rules, evaluated)?;
        if counts.all.notifications > 0 {
            badge += 1;
        }
    }
    Ok(badge)
}

/// What push conditions know of a room: its member count, the user's display name in it (the
/// localpart when the member event has none) and its power levels.
fn room_context(
    conn: &Connection,
    room_id: &RoomId,
    user: &UserId,
) -> Result<PushConditionRoomCtx> {
    let member_count = store::joined_member_count(conn, room_id.as_str())?;
    let display_name = state_content(conn, room_id, "m.room.member", user.as_str())?
        .and_then(|content| content["displayname"].as_str().map(str::to_owned))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| user.localpart().to_owned());
    let context = PushConditionRoomCtx::new(
        room_id.to_owned(),
        UInt::try_from(member_count.max(0) as u64).unwrap_or_default(),
        user.to_owned(),
        display_name,
    );
    // The power levels as push conditions need them (`sender_notification_permission`).
    Ok(match power_levels::current(conn, room_id)? {
        Some(levels) => context.with_power_levels(levels.into()),
        None => context,
    })
}

/// The content and sender of a current state event; an unreadable content (stored by an older
/// version) reads as empty.
fn state_event(
    conn: &Connection,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
) -> Result<Option<Value>> {
    let Some(json) = store::current_state_json(conn, room_id.as_str(), event_type, state_key)?
    else {
        return Ok(None);
    };
    let Some(event) = stored::Envelope::parse(&json) else {
        return Ok(None);
    };
    Ok(Some(json!({
        "sender": event.sender,
        "content": event.content().unwrap_or_else(|| json!({})),
    })))
}

fn state_content(
    conn: &Connection,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
) -> Result<Option<Value>> {
    Ok(state_event(conn, room_id, event_type, state_key)?.map(|event| event["content"].clone()))
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, push::NewSimplePushRule};

    use super::*;

    #[test]
    fn stored_rules_keep_user_changes_and_gain_new_defaults() {
        let user = owned_user_id!("@bob:example.org");
        let mut ruleset = Ruleset::server_default(&user);
        ruleset
            .set_enabled(RuleKind::Underride, ".m.rule.message", false)
            .unwrap();
        ruleset
            .insert(
                NewPushRule::Sender(NewSimplePushRule::new(
                    owned_user_id!("@spam:example.org"),
                    vec![],
                )),
                None,
                None,
            )
            .unwrap();
        // A stored ruleset missing a default rule gets it back.
        ruleset.override_.shift_remove(".m.rule.tombstone");
        let stored = serde_json::to_string(&content(ruleset).unwrap()).unwrap();

        let loaded = ruleset_from_content(&user, Some(&stored));
        assert!(
            !loaded
                .get(RuleKind::Underride, ".m.rule.message")
                .unwrap()
                .enabled()
        );
        assert!(loaded.get(RuleKind::Sender, "@spam:example.org").is_some());
        assert!(
            loaded
                .get(RuleKind::Override, ".m.rule.tombstone")
                .is_some()
        );
        assert_eq!(
            loaded.override_.first().unwrap().rule_id,
            ".m.rule.master",
            "the master rule stays first"
        );
    }

    #[test]
    fn unreadable_content_means_defaults() {
        let user = owned_user_id!("@bob:example.org");
        let loaded = ruleset_from_content(&user, Some(r#"{"global": 5}"#));
        assert!(loaded.get(RuleKind::Override, ".m.rule.master").is_some());
        assert!(
            ruleset_from_content(&user, None)
                .get(RuleKind::Underride, ".m.rule.message")
                .is_some()
        );
    }
}
