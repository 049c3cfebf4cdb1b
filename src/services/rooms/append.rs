//! Creating a local event: choose `prev_events` and `auth_events`, build the PDU, hash and sign
//! it, derive its ID, check it against the spec's authorization rules (ruma-state-res) with the
//! state before it, and store it with the state after it, all in one database transaction.
//!
//! The checks are ruma-state-res's `check_state_independent_auth_rules` and
//! `check_state_dependent_auth_rules`; a refused event is never stored. [`append_event`] also
//! queues the event for the room's other servers in the same transaction
//! (`federation::sender::enqueue_pdu`); `references` writes `prev_events`/`auth_events` in the room
//! version's format (`[ID, hashes]` pairs in version 2).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName,
    RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    state_res,
};
use rusqlite::Connection;
use serde_json::Value;

use super::{
    limits,
    pdu::{self, Pdu},
    stored,
};
use crate::{
    error::{Error, Result},
    services::{federation::sender, server_key::ServerKey},
    storage::{
        now_ms, pdus,
        rooms::{self as store, NewEventRow, StateIds},
    },
};

/// The most `prev_events` an event lists; more forward extremities are merged over several events.
const MAX_PREV_EVENTS: usize = 10;

/// What a client asks to add to a room.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(
        kind: impl Into<TimelineEventType>,
        state_key: impl Into<String>,
        content: Value,
    ) -> Self {
        Self {
            kind: kind.into(),
            state_key: Some(state_key.into()),
            content,
            redacts: None,
        }
    }

    pub fn message(kind: impl Into<TimelineEventType>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// An event that was stored.
#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub stream: i64,
}

/// Where a new event goes: an existing room, or a new room it creates (`m.room.create`).
pub enum Target<'a> {
    Room(&'a RoomId),
    NewRoom { version: &'a RoomVersionId },
}

pub struct Signer<'a> {
    pub server_name: &'a OwnedServerName,
    pub key: &'a ServerKey,
}

pub fn append_event(
    tx: &Connection,
    signer: &Signer<'_>,
    target: Target<'_>,
    sender: &UserId,
    draft: EventDraft,
) -> Result<Appended> {
    // Every event passes here: what this server could not store, sign or read back is refused
    // before anything is built.
    limits::check_type_and_state_key(&draft.kind.to_string(), draft.state_key.as_deref())?;
    limits::check_content(&draft.content)?;
    let Built {
        mut object,
        room_id,
        version,
        rules,
        prev_events,
        depth,
        state_before,
        prev_group,
    } = build(tx, signer.server_name, target, sender, &draft)?;

    let is_create = draft.kind == TimelineEventType::RoomCreate;
    let (event_id, room_id) = sign_and_name(&mut object, signer, &rules, room_id, |id| {
        Ok(is_create && store::room_version(tx, id.as_str())?.is_some())
    })?;
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    limits::check_pdu(&object, &json, event_id.as_str())?;
    let pdu = Pdu::from_json(event_id.clone(), &json)?;
    // What a state event replaced goes in `unsigned`, which hashes and signatures do not cover;
    // clients read `prev_content` to describe the change ("Alice changed her name from ...").
    let json = match draft
        .state_key
        .as_ref()
        .and_then(|key| state_before.get(&(draft.kind.to_string(), key.clone())))
    {
        Some(replaced) => with_replaced_state(tx, object, replaced)?,
        None => json,
    };

    check_auth(tx, &rules, &pdu, &state_before)?;

    if draft.kind == TimelineEventType::RoomCreate {
        store::insert_room(
            tx,
            room_id.as_str(),
            version.as_str(),
            sender.as_str(),
            now_ms(),
        )?;
    }
    let several_parents = prev_events.len() > 1;
    let state_group = match &draft.state_key {
        // After a fork the state before the event (the current state, resolved) is not the state
        // of the first parent's group: the new group holds the difference from that group.
        _ if several_parents => {
            let mut after = state_before.clone();
            if let Some(state_key) = &draft.state_key {
                after.insert(
                    (draft.kind.to_string(), state_key.clone()),
                    event_id.to_string(),
                );
            }
            super::state::group_for_state(tx, room_id.as_str(), prev_group, &after)?
        }
        Some(state_key) => {
            let change = StateIds::from([(
                (draft.kind.to_string(), state_key.clone()),
                event_id.to_string(),
            )]);
            store::new_state_group(tx, room_id.as_str(), prev_group, &change)?
        }
        None => match prev_group {
            Some(group) => group,
            None => return Err(Error::internal("a non-state event needs a room with state")),
        },
    };
    let relation = relation_of(&draft.content);
    let stream = store::insert_event(
        tx,
        &NewEventRow {
            event_id: event_id.as_str(),
            room_id: room_id.as_str(),
            event_type: &draft.kind.to_string(),
            state_key: draft.state_key.as_deref(),
            sender: sender.as_str(),
            origin_server_ts: pdu.origin_server_ts().get().into(),
            depth,
            redacts: draft.redacts.as_ref().map(|r| r.as_str()),
            relates_to: relation
                .as_ref()
                .map(|(id, rel)| (id.as_str(), rel.as_str())),
            prev_events: &prev_events,
            json: &json,
        },
        state_group,
    )?;
    if draft.kind == TimelineEventType::RoomMember
        && let (Some(member), Some(membership)) = (
            &draft.state_key,
            draft.content.get("membership").and_then(Value::as_str),
        )
    {
        store::set_membership(
            tx,
            room_id.as_str(),
            member,
            membership,
            event_id.as_str(),
            stream,
        )?;
    }
    if let Some(redacts) = &draft.redacts {
        store::mark_redacted(tx, redacts.as_str(), event_id.as_str())?;
    }
    // Every local event passes here: queue it for the other servers in the same transaction,
    // so that an acknowledged event is never lost to a crash. A membership change also goes to
    // the member's server (a kick must reach them). An invite of another server's user goes
    // by `/invite` first (`federation/invites.rs`, stored through `accept` with `Arrival::Own`).
    let member_server = match (&draft.kind, &draft.state_key) {
        (TimelineEventType::RoomMember, Some(member))
            if draft.content.get("membership").and_then(Value::as_str)
                != Some(MembershipState::Invite.as_str()) =>
        {
            <&UserId>::try_from(member.as_str())
                .ok()
                .map(UserId::server_name)
        }
        _ => None,
    };
    sender::enqueue_pdu(
        tx,
        signer.server_name,
        &room_id,
        &event_id,
        stream,
        member_server.as_slice(),
    )?;
    Ok(Appended {
        event_id,
        room_id,
        stream,
    })
}

/// The room's current state event that `draft` would only repeat (same type, state key,
/// sender and content), as Synapse's `deduplicate_state_event`: setting a state twice, or
/// joining a room one is joined to with the same profile, answers the existing event instead of
/// adding one. Clients and bridges re-send state freely; every copy would otherwise be a new
/// event for every member and server.
pub fn existing_state(
    tx: &Connection,
    room_id: &RoomId,
    sender: &UserId,
    draft: &EventDraft,
) -> Result<Option<Appended>> {
    let Some(state_key) = &draft.state_key else {
        return Ok(None);
    };
    let kind = draft.kind.to_string();
    let Some(event_id) = store::current_state_event(tx, room_id.as_str(), &kind, state_key)? else {
        return Ok(None);
    };
    let Some(row) = store::get_event(tx, &event_id)? else {
        return Ok(None);
    };
    if row.sender != sender.as_str() || row.redacted_by.is_some() {
        return Ok(None);
    }
    // A stored event that cannot be read (nested too deeply) is simply not a duplicate.
    let Ok(stored) = serde_json::from_str::<Value>(&row.json) else {
        return Ok(None);
    };
    if stored.get("content") != Some(&draft.content) {
        return Ok(None);
    }
    Ok(Some(Appended {
        event_id: OwnedEventId::try_from(row.event_id).map_err(Error::internal)?,
        room_id: room_id.to_owned(),
        stream: row.stream_ordering,
    }))
}

/// The spec's authorization rules, against the state before the event: `403` when they refuse.
/// Auth events may be outliers (the state of a room joined over federation); never rejected.
fn check_auth(
    tx: &Connection,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state_before: &StateIds,
) -> Result<()> {
    let fetch = |id: &EventId| -> Option<Pdu> {
        let found = pdus::auth_pdu(tx, id.as_str()).ok()??;
        if found.rejected {
            return None;
        }
        Pdu::from_json(id.to_owned(), &found.json).ok()
    };
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch)
        .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))?;
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |kind, state_key| {
        let id = state_before.get(&(kind.to_string(), state_key.to_owned()))?;
        fetch(&OwnedEventId::try_from(id.as_str()).ok()?)
    })
    .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))
}

/// An event of this server that another server must countersign before it is stored (an
/// invite of another server's user): built, signed and checked as [`append_event`] would, but
/// not stored. The countersigned copy enters the room through `Rooms::accept` with
/// `Arrival::Own`.
pub struct OwnEvent {
    pub object: CanonicalJsonObject,
    pub event_id: OwnedEventId,
    pub version: RoomVersionId,
}

/// Builds, signs and checks [`OwnEvent`] (the room's current state allows it now).
pub fn own_event(
    tx: &Connection,
    signer: &Signer<'_>,
    room_id: &RoomId,
    sender: &UserId,
    draft: &EventDraft,
) -> Result<OwnEvent> {
    limits::check_type_and_state_key(&draft.kind.to_string(), draft.state_key.as_deref())?;
    limits::check_content(&draft.content)?;
    let Built {
        mut object,
        version,
        rules,
        state_before,
        ..
    } = build(tx, signer.server_name, Target::Room(room_id), sender, draft)?;
    let (event_id, _) = sign_and_name(
        &mut object,
        signer,
        &rules,
        Some(room_id.to_owned()),
        |_| Ok(false),
    )?;
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    limits::check_pdu(&object, &json, event_id.as_str())?;
    let pdu = Pdu::from_json(event_id.clone(), &json)?;
    check_auth(tx, &rules, &pdu, &state_before)?;
    Ok(OwnEvent {
        object,
        event_id,
        version,
    })
}

/// An event before it is hashed and signed: the PDU's fields, and what building it found out.
struct Built {
    object: CanonicalJsonObject,
    /// `None` for a create event of room version 12 and later (the ID is its hash).
    room_id: Option<OwnedRoomId>,
    version: RoomVersionId,
    rules: RoomVersionRules,
    prev_events: Vec<String>,
    depth: i64,
    state_before: StateIds,
    prev_group: Option<i64>,
}

/// Chooses `prev_events` (the forward extremities, newest first, at most ten), `depth` and
/// `auth_events` (from the state before the event, which is the room's current state) and lays
/// out the PDU's fields.
fn build(
    tx: &Connection,
    server_name: &OwnedServerName,
    target: Target<'_>,
    sender: &UserId,
    draft: &EventDraft,
) -> Result<Built> {
    let (room_id, version) = match target {
        Target::Room(room_id) => {
            let version = store::room_version(tx, room_id.as_str())?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            let version = RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?;
            (Some(room_id.to_owned()), version)
        }
        Target::NewRoom { version } => (None, version.clone()),
    };
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal(format!("no rules for room version {version}")))?;
    // Before v12 a new room gets a random ID; since, the ID is the hash of its create event.
    let is_new_room = room_id.is_none();
    let room_id = match room_id {
        None if !rules.authorization.room_create_event_id_as_room_id => {
            Some(RoomId::new_v1(server_name))
        }
        other => other,
    };

    // Parents and the state before the event. Local rooms grow linearly, so the state after the
    // single forward extremity is the current state.
    let (prev_events, depth, state_before, prev_group) = match &room_id {
        Some(room_id) if !is_new_room => {
            let mut extremities = store::forward_extremities(tx, room_id.as_str())?;
            extremities.sort_by_key(|e| std::cmp::Reverse(e.topological_ordering));
            extremities.truncate(MAX_PREV_EVENTS);
            let depth = extremities
                .iter()
                .map(|e| e.topological_ordering)
                .max()
                .unwrap_or(0)
                + 1;
            let prev_group = match extremities.first() {
                Some(e) => store::get_event(tx, &e.event_id)?.map(|row| row.state_group),
                None => None,
            };
            let state = store::current_state(tx, room_id.as_str())?;
            (
                extremities
                    .into_iter()
                    .map(|e| e.event_id)
                    .collect::<Vec<_>>(),
                depth,
                state,
                prev_group,
            )
        }
        _ => (Vec::new(), 1, StateIds::new(), None),
    };

    let content_raw = serde_json::value::to_raw_value(&draft.content).map_err(Error::internal)?;
    let auth_types = state_res::auth_types_for_event(
        &draft.kind,
        sender,
        draft.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
    let mut auth_events: Vec<String> = Vec::new();
    for (event_type, state_key) in &auth_types {
        if rules.authorization.room_create_event_id_as_room_id
            && *event_type == StateEventType::RoomCreate
        {
            continue; // since v12 the create event is implied by the room ID
        }
        if let Some(id) = state_before.get(&(event_type.to_string(), state_key.clone()))
            && !auth_events.contains(id)
        {
            auth_events.push(id.clone());
        }
    }

    let mut object = CanonicalJsonObject::new();
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    if let Some(room_id) = &room_id {
        object.insert("room_id".into(), string(room_id.as_str()));
    }
    object.insert("sender".into(), string(sender.as_str()));
    object.insert("type".into(), string(&draft.kind.to_string()));
    object.insert("content".into(), to_canonical(&draft.content)?);
    if let Some(state_key) = &draft.state_key {
        object.insert("state_key".into(), string(state_key));
    }
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(now_ms().try_into().map_err(Error::internal)?),
    );
    object.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(depth.try_into().map_err(Error::internal)?),
    );
    object.insert("prev_events".into(), references(tx, &prev_events, &rules)?);
    object.insert("auth_events".into(), references(tx, &auth_events, &rules)?);
    // Before room version 3 the sending server names the event (`$random:server`), inside the
    // hashed and signed event; since, the ID is the event's hash.
    if rules.event_id_format == EventIdFormatVersion::V1 {
        object.insert(
            "event_id".into(),
            string(EventId::new_v1(server_name).as_str()),
        );
    }
    if let Some(redacts) = &draft.redacts
        && !rules.redaction.content_field_redacts
    {
        object.insert("redacts".into(), string(redacts.as_str()));
    }
    Ok(Built {
        object,
        room_id,
        version,
        rules,
        prev_events,
        depth,
        state_before,
        prev_group,
    })
}

/// The unsigned event a `make_join` (or `make_leave`, `make_knock`) answer holds: what
/// `append_event` would build for `sender` in `room_id`, for the sender's server to sign.
pub fn event_template(
    tx: &Connection,
    server_name: &OwnedServerName,
    room_id: &RoomId,
    sender: &UserId,
    draft: &EventDraft,
) -> Result<CanonicalJsonObject> {
    limits::check_type_and_state_key(&draft.kind.to_string(), draft.state_key.as_deref())?;
    limits::check_content(&draft.content)?;
    let mut object = build(tx, server_name, Target::Room(room_id), sender, draft)?.object;
    // Before room version 3 the joining server names its event itself.
    object.remove("event_id");
    Ok(object)
}

/// `prev_events` / `auth_events` in the room version's format: the IDs, or before room version 3
/// the pairs `[ID, {"sha256": reference hash}]`, each hash from the stored event (ruma's
/// `reference_hash` redacts and drops `unsigned` itself).
fn references(
    tx: &Connection,
    ids: &[String],
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonValue> {
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    if rules.events_reference_format != EventsReferenceFormatVersion::V1 {
        return Ok(CanonicalJsonValue::Array(
            ids.iter().map(|id| string(id)).collect(),
        ));
    }
    let mut references = Vec::with_capacity(ids.len());
    for id in ids {
        let stored = pdus::auth_pdu(tx, id)?
            .ok_or_else(|| Error::internal(format!("referenced event {id} is not stored")))?;
        let object: CanonicalJsonObject =
            serde_json::from_str(&stored.json).map_err(Error::internal)?;
        let hash = ruma::signatures::reference_hash(&object, rules)
            .map_err(|e| Error::internal(format!("cannot hash {id}: {e}")))?;
        let hashes = CanonicalJsonObject::from([("sha256".to_owned(), string(&hash))]);
        references.push(CanonicalJsonValue::Array(vec![
            string(id),
            CanonicalJsonValue::Object(hashes),
        ]));
    }
    Ok(CanonicalJsonValue::Array(references))
}

/// The stored form of a state event: the PDU plus `unsigned.replaces_state`, `prev_content` and
/// `prev_sender` from the event it replaces, as Synapse serves them.
fn with_replaced_state(
    tx: &Connection,
    mut object: CanonicalJsonObject,
    replaced_id: &str,
) -> Result<String> {
    let mut unsigned = CanonicalJsonObject::new();
    unsigned.insert(
        "replaces_state".into(),
        CanonicalJsonValue::String(replaced_id.to_owned()),
    );
    if let Some(row) = store::get_event(tx, replaced_id)? {
        // An event stored by an older version may hold content too deep to read back or to
        // nest here; the new event then goes without it rather than being refused.
        match stored::content(&row.json).map(CanonicalJsonValue::try_from) {
            Some(Ok(content)) => {
                unsigned.insert("prev_content".into(), content);
            }
            _ => tracing::warn!(event_id = replaced_id, "replaced state event unreadable"),
        }
        unsigned.insert(
            "prev_sender".into(),
            CanonicalJsonValue::String(row.sender.clone()),
        );
    }
    object.insert("unsigned".into(), CanonicalJsonValue::Object(unsigned));
    serde_json::to_string(&object).map_err(Error::internal)
}

/// Hashes and signs the event and derives its ID, and the room ID of a new room (since v12 the
/// create event's hash). The same creator making rooms with the same content in the same
/// millisecond (writes committed together) would get one room ID: a create event whose room ID
/// is `taken` moves to the next millisecond and is signed again.
fn sign_and_name(
    object: &mut CanonicalJsonObject,
    signer: &Signer<'_>,
    rules: &RoomVersionRules,
    room_id: Option<OwnedRoomId>,
    taken: impl Fn(&RoomId) -> Result<bool>,
) -> Result<(OwnedEventId, OwnedRoomId)> {
    loop {
        ruma::signatures::hash_and_sign_event(
            signer.server_name.as_str(),
            signer.key.key_pair(),
            object,
            &rules.redaction,
        )
        .map_err(|e| signing_error("sign", e))?;
        let event_id = pdu::event_id(object, rules).map_err(|e| match e {
            pdu::InvalidPdu::TooLarge => Error::from(e),
            other => Error::internal(format!("cannot name event: {other}")),
        })?;
        let room_id = match &room_id {
            Some(room_id) => room_id.clone(),
            None => RoomId::new_v2(&event_id.as_str()[1..]).map_err(Error::internal)?,
        };
        if !taken(&room_id)? {
            return Ok((event_id, room_id));
        }
        let next = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => *ts + ruma::int!(1),
            _ => return Err(Error::internal("an event without origin_server_ts")),
        };
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(next));
        object.remove("hashes");
        object.remove("signatures");
    }
}

/// `413 M_TOO_LARGE` for an event over the spec's size limit; anything else is a bug.
fn signing_error(what: &str, error: ruma::signatures::JsonError) -> Error {
    match error {
        ruma::signatures::JsonError::PduTooLarge => Error::too_large(format!(
            "The event is larger than {} bytes",
            limits::MAX_PDU_BYTES
        )),
        other => Error::internal(format!("cannot {what} event: {other}")),
    }
}

fn to_canonical(value: &Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value.clone())
        .map_err(|e| Error::bad_json(format!("Content is not canonical JSON: {e}")))
}

/// `m.relates_to` of a content: `(event_id, rel_type)`.
pub(super) fn relation_of(content: &Value) -> Option<(String, String)> {
    let relates_to = content.get("m.relates_to")?;
    let event_id = relates_to.get("event_id")?.as_str()?;
    let rel_type = relates_to
        .get("rel_type")
        .and_then(Value::as_str)
        .unwrap_or("m.in_reply_to");
    Some((event_id.to_owned(), rel_type.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_event_whose_room_id_is_taken_moves_to_the_next_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let server_name = OwnedServerName::try_from("example.org").unwrap();
        let key = ServerKey::load_or_create(dir.path(), &server_name).unwrap();
        let signer = Signer {
            server_name: &server_name,
            key: &key,
        };
        let rules = RoomVersionId::V12.rules().unwrap();
        let create: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
            "type": "m.room.create", "state_key": "", "sender": "@alice:example.org",
            "content": {"room_version": "12"}, "origin_server_ts": 1_700_000_000_000_u64,
            "depth": 1, "prev_events": [], "auth_events": [],
        }))
        .unwrap();

        let (first_event, first_room) =
            sign_and_name(&mut create.clone(), &signer, &rules, None, |_| Ok(false)).unwrap();
        let mut again = create.clone();
        let (second_event, second_room) =
            sign_and_name(&mut again, &signer, &rules, None, |room| {
                Ok(*room == first_room)
            })
            .unwrap();
        assert_ne!(second_room, first_room);
        assert_ne!(second_event, first_event);
        assert_eq!(second_room.as_str()[1..], second_event.as_str()[1..]);
        assert_eq!(
            again["origin_server_ts"],
            CanonicalJsonValue::Integer(ruma::Int::new(1_700_000_000_001).unwrap())
        );
        ruma::signatures::verify_event(
            &[(
                "example.org".to_owned(),
                [(
                    key.key_id(),
                    ruma::serde::Base64::parse(key.public_key_base64()).unwrap(),
                )]
                .into(),
            )]
            .into(),
            &again,
            &rules,
        )
        .expect("signed again after the move");
    }
}
