//! Server-side search (`/search`, category `room_events`) over the FTS5 index of the rooms the
//! user is joined to. Results are ranked by BM25 or ordered newest first, filtered by the room
//! event filter and by history visibility, and come with their context and bundled aggregations.
//!
//! `count` is the number of matches after the room, type and sender filters (at most
//! [`MAX_CANDIDATES`]); history visibility and the URL filter apply to the returned page only,
//! which makes the count approximate, as the spec allows.
//!
//! The index is SQLite FTS5 (`storage/search.rs`, tokenizer porter + unicode61 without diacritics).
//! A search term allows words (prefix-matched), `"phrases"`, `or` and `-exclusions`. Results are
//! paged by `next_batch` (an offset for `rank`, a stream position for `recent`) and may carry
//! context, profiles, room state and groupings by room or sender.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UInt, UserId,
    api::client::search::search_events::v3::{
        Criteria, EventContextResult, GroupingKey, OrderBy, ResultGroup, ResultGroupMap,
        ResultRoomEvents, SearchKeys, SearchResult, UserProfile,
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::{
    Rooms,
    context::{scan, visible_row},
    read::{PaginationToken, Visibility, render},
    relations::{Reader, bundle_aggregations},
    stored::Envelope,
};
use crate::{
    error::{Error, Result},
    services::filter::room_event_matches,
    storage::{
        rooms as store,
        search::{self as search_store, SearchTerm},
    },
};

/// Most matches considered per search.
pub const MAX_CANDIDATES: usize = 5000;
/// Results per page when the filter sets no limit.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Most context events on either side of a result.
const MAX_CONTEXT: usize = 50;

/// A `next_batch` token: an offset in the ranked results, or the stream position below which
/// results continue when ordered by recency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchToken {
    Offset(usize),
    Before(i64),
}

impl SearchToken {
    fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid search token `{token}`"));
        if let Some(offset) = token.strip_prefix("o") {
            return Ok(Self::Offset(offset.parse().map_err(|_| invalid())?));
        }
        if let Some(stream) = token.strip_prefix("b") {
            return Ok(Self::Before(stream.parse().map_err(|_| invalid())?));
        }
        Err(invalid())
    }

    fn render(self) -> String {
        match self {
            Self::Offset(offset) => format!("o{offset}"),
            Self::Before(stream) => format!("b{stream}"),
        }
    }
}

/// Splits a search term into words and quoted phrases; `or` between terms means OR and a leading
/// `-` excludes a term. Terms without letters or digits are dropped.
pub fn parse_search_term(input: &str) -> Vec<SearchTerm> {
    let mut terms = Vec::new();
    let mut chars = input.chars().peekable();
    let mut next_or = false;
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut negated = false;
        if c == '-' {
            negated = true;
            chars.next();
        }
        let (text, quoted) = if chars.peek() == Some(&'"') {
            chars.next();
            let mut text = String::new();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
            (text, true)
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                text.push(c);
                chars.next();
            }
            (text, false)
        };
        if !quoted && !negated && text.eq_ignore_ascii_case("or") {
            next_or = !terms.is_empty();
            continue;
        }
        if !text.chars().any(char::is_alphanumeric) {
            continue;
        }
        terms.push(SearchTerm {
            text,
            prefix: !quoted,
            negated,
            or: next_or,
        });
        next_or = false;
    }
    terms
}

fn column_of(key: &SearchKeys) -> Option<&'static str> {
    match key {
        SearchKeys::ContentBody => Some("body"),
        SearchKeys::ContentName => Some("name"),
        SearchKeys::ContentTopic => Some("topic"),
        _ => None,
    }
}

fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

/// One result before it is turned into the response.
struct Found {
    event: Value,
    rank: f64,
    room_id: String,
    sender: String,
    context: EventContextResult,
}

impl Rooms {
    /// `/search` for `room_events`.
    pub async fn search_room_events(
        &self,
        user: &UserId,
        device: Option<String>,
        criteria: Criteria,
        next_batch: Option<String>,
    ) -> Result<ResultRoomEvents> {
        let token = next_batch.as_deref().map(SearchToken::parse).transpose()?;
        let by_rank = !matches!(criteria.order_by, Some(OrderBy::Recent));
        let columns: Vec<&'static str> = match &criteria.keys {
            None => vec!["body", "name", "topic"],
            Some(keys) => {
                let mut columns = Vec::new();
                for key in keys {
                    let column = column_of(key).ok_or_else(|| {
                        Error::invalid_param(format!("Unknown search key {}", key.as_str()))
                    })?;
                    if !columns.contains(&column) {
                        columns.push(column);
                    }
                }
                columns
            }
        };
        let terms = parse_search_term(&criteria.search_term);
        let highlights: Vec<String> = {
            let mut seen = Vec::new();
            for term in terms.iter().filter(|t| !t.negated) {
                for word in term.text.split_whitespace() {
                    let word = word.to_lowercase();
                    if !seen.contains(&word) {
                        seen.push(word);
                    }
                }
            }
            seen
        };
        let limit = criteria
            .filter
            .limit
            .map_or(DEFAULT_LIMIT, |l| u64::from(l) as usize)
            .clamp(1, MAX_LIMIT);
        let before_limit =
            (u64::from(criteria.event_context.before_limit) as usize).min(MAX_CONTEXT);
        let after_limit = (u64::from(criteria.event_context.after_limit) as usize).min(MAX_CONTEXT);
        let include_profile = criteria.event_context.include_profile;
        let include_state = criteria.include_state.unwrap_or(false);
        let group_keys: Vec<GroupingKey> = criteria
            .groupings
            .group_by
            .iter()
            .filter_map(|g| g.key.clone())
            .collect();
        let filter = criteria.filter;
        let user = user.to_owned();

        let (found, count, next, state) = self
            .db
            .read(move |c| {
                let reader = Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                let rooms: Vec<String> = store::memberships_of_user(c, user.as_str())?
                    .into_iter()
                    .filter(|row| row.membership == MembershipState::Join.as_str())
                    .map(|row| row.room_id)
                    .filter(|room| {
                        !filter.not_rooms.iter().any(|r| r.as_str() == room)
                            && filter
                                .rooms
                                .as_ref()
                                .is_none_or(|rooms| rooms.iter().any(|r| r.as_str() == room))
                    })
                    .collect();
                let Some(expression) = search_store::match_expression(&terms, &columns) else {
                    return Ok((Vec::new(), 0, None, BTreeMap::new()));
                };
                let hits = search_store::search(c, &expression, &rooms, by_rank, MAX_CANDIDATES)?;
                // Type and sender conditions on the index rows; the URL condition needs the
                // content and applies to the rendered page.
                let mut cheap_filter = filter.clone();
                cheap_filter.url_filter = None;
                let hits: Vec<_> = hits
                    .into_iter()
                    .filter(|hit| {
                        room_event_matches(
                            &cheap_filter,
                            &json!({"type": hit.event_type, "sender": hit.sender}),
                        )
                    })
                    .collect();
                let count = hits.len();
                let first = match token {
                    None => 0,
                    Some(SearchToken::Offset(offset)) => offset.min(hits.len()),
                    Some(SearchToken::Before(stream)) => hits
                        .iter()
                        .position(|hit| hit.stream_ordering < stream)
                        .unwrap_or(hits.len()),
                };
                let mut versions: HashMap<String, RoomVersionId> = HashMap::new();
                let mut visibilities: HashMap<String, Visibility<'_>> = HashMap::new();
                let mut found = Vec::new();
                let mut next = None;
                for (index, hit) in hits.iter().enumerate().skip(first) {
                    if found.len() >= limit {
                        next = Some(if by_rank {
                            SearchToken::Offset(index)
                        } else {
                            SearchToken::Before(hits[index - 1].stream_ordering)
                        });
                        break;
                    }
                    let version = match versions.get(&hit.room_id) {
                        Some(version) => version.clone(),
                        None => {
                            let version = store::room_version(c, &hit.room_id)?
                                .ok_or_else(|| Error::internal("room without version"))?;
                            let version = RoomVersionId::try_from(version.as_str())
                                .map_err(Error::internal)?;
                            versions.insert(hit.room_id.clone(), version.clone());
                            version
                        }
                    };
                    if !visibilities.contains_key(&hit.room_id) {
                        visibilities.insert(
                            hit.room_id.clone(),
                            Visibility::new(c, &hit.room_id, &user)?,
                        );
                    }
                    let visibility = visibilities
                        .get_mut(&hit.room_id)
                        .ok_or_else(|| Error::internal("visibility missing"))?;
                    let row = match visible_row(c, &hit.room_id, &hit.event_id, visibility) {
                        Ok(row) => row,
                        Err(Error::Matrix { .. }) => continue,
                        Err(other) => return Err(other),
                    };
                    let Some(event) =
                        render(c, &row, &version, Some((reader.user, reader.device)), true)?
                    else {
                        continue;
                    };
                    if !room_event_matches(&filter, &event) {
                        continue;
                    }
                    let position = (row.topological_ordering, row.stream_ordering);
                    let everything = |_: &Value| true;
                    let before = scan(
                        c,
                        &hit.room_id,
                        position,
                        true,
                        before_limit,
                        visibility,
                        &version,
                        reader,
                        &everything,
                    )?;
                    let after = scan(
                        c,
                        &hit.room_id,
                        position,
                        false,
                        after_limit,
                        visibility,
                        &version,
                        reader,
                        &everything,
                    )?;
                    let mut context = EventContextResult::new();
                    if before_limit > 0 || after_limit > 0 {
                        context.start =
                            Some(PaginationToken::Topological(before.position).to_string());
                        context.end =
                            Some(PaginationToken::Topological(after.position).to_string());
                    }
                    if include_profile {
                        let last_group = after.rows.last().unwrap_or(&row).state_group;
                        let senders: HashSet<&str> = before
                            .events
                            .iter()
                            .chain(std::iter::once(&event))
                            .chain(&after.events)
                            .filter_map(|e| e["sender"].as_str())
                            .collect();
                        context.profile_info = profiles(c, last_group, &senders)?;
                    }
                    let mut before_events = before.events;
                    let mut after_events = after.events;
                    bundle_aggregations(c, &mut before_events, &hit.room_id, reader)?;
                    bundle_aggregations(c, &mut after_events, &hit.room_id, reader)?;
                    context.events_before = before_events
                        .into_iter()
                        .map(to_raw)
                        .collect::<Result<_>>()?;
                    context.events_after = after_events
                        .into_iter()
                        .map(to_raw)
                        .collect::<Result<_>>()?;
                    found.push(Found {
                        event,
                        rank: hit.rank,
                        room_id: hit.room_id.clone(),
                        sender: hit.sender.clone(),
                        context,
                    });
                }
                let mut events: Vec<Value> = found
                    .iter_mut()
                    .map(|f| std::mem::take(&mut f.event))
                    .collect();
                if let Some(first) = found.first() {
                    bundle_aggregations(c, &mut events, &first.room_id, reader)?;
                }
                for (f, event) in found.iter_mut().zip(events) {
                    f.event = event;
                }
                let mut state = BTreeMap::new();
                if include_state {
                    let rooms: HashSet<&str> = found.iter().map(|f| f.room_id.as_str()).collect();
                    for room in rooms {
                        let version = versions
                            .get(room)
                            .cloned()
                            .ok_or_else(|| Error::internal("room without version"))?;
                        let ids: Vec<String> =
                            store::current_state(c, room)?.into_values().collect();
                        let mut events = Vec::new();
                        for row in &store::events_by_id(c, &ids)? {
                            events.extend(render(c, row, &version, None, true)?);
                        }
                        state.insert(room.to_owned(), events);
                    }
                }
                Ok::<_, Error>((found, count, next, state))
            })
            .await?;

        let next_batch = next.map(SearchToken::render);
        let mut response = ResultRoomEvents::new();
        response.count = Some(UInt::try_from(count as u64).unwrap_or(UInt::MAX));
        response.highlights = highlights;
        response.next_batch = next_batch.clone();
        for key in group_keys {
            match key {
                GroupingKey::RoomId => {
                    let mut groups: BTreeMap<OwnedRoomId, ResultGroup> = BTreeMap::new();
                    for f in &found {
                        let room =
                            OwnedRoomId::try_from(f.room_id.as_str()).map_err(Error::internal)?;
                        push_group(&mut groups, room, f, next_batch.as_ref())?;
                    }
                    response.groups.insert(ResultGroupMap::RoomId(groups));
                }
                GroupingKey::Sender => {
                    let mut groups: BTreeMap<OwnedUserId, ResultGroup> = BTreeMap::new();
                    for f in &found {
                        let sender =
                            OwnedUserId::try_from(f.sender.as_str()).map_err(Error::internal)?;
                        push_group(&mut groups, sender, f, next_batch.as_ref())?;
                    }
                    response.groups.insert(ResultGroupMap::Sender(groups));
                }
                _ => {}
            }
        }
        for (room, events) in state {
            let room = OwnedRoomId::try_from(room.as_str()).map_err(Error::internal)?;
            response
                .state
                .insert(room, events.into_iter().map(to_raw).collect::<Result<_>>()?);
        }
        for f in found {
            let mut result = SearchResult::new();
            result.rank = Some(f.rank);
            result.result = Some(to_raw(f.event)?);
            result.context = f.context;
            response.results.push(result);
        }
        Ok(response)
    }
}

fn push_group<K: Ord>(
    groups: &mut BTreeMap<K, ResultGroup>,
    key: K,
    found: &Found,
    next_batch: Option<&String>,
) -> Result<()> {
    let event_id = found.event["event_id"]
        .as_str()
        .and_then(|id| OwnedEventId::try_from(id).ok())
        .ok_or_else(|| Error::internal("result without event ID"))?;
    // `order`: groups rank by their best result, which comes first.
    let order = UInt::try_from(groups.len() as u64).unwrap_or(UInt::MAX);
    let group = groups.entry(key).or_insert_with(|| {
        let mut group = ResultGroup::new();
        group.next_batch = next_batch.cloned();
        group.order = Some(order);
        group
    });
    group.results.push(event_id);
    Ok(())
}

/// `displayname` and `avatar_url` of the senders at a state group.
fn profiles(
    conn: &Connection,
    group: i64,
    senders: &HashSet<&str>,
) -> Result<BTreeMap<OwnedUserId, UserProfile>> {
    let mut profiles = BTreeMap::new();
    for sender in senders {
        let Some(id) = store::state_event_at_group(conn, group, "m.room.member", sender)? else {
            continue;
        };
        let Some(row) = store::get_event(conn, &id)? else {
            continue;
        };
        let Some(member) = Envelope::parse(&row.json) else {
            continue;
        };
        let mut profile = UserProfile::new();
        profile.displayname = member.content_str("displayname");
        profile.avatar_url = member.content_str("avatar_url").map(Into::into);
        let user = OwnedUserId::try_from(*sender).map_err(Error::internal)?;
        profiles.insert(user, profile);
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_words_phrases_or_and_negation() {
        let terms = parse_search_term(r#"  Hello "big world" or -spam - !! x"#);
        let described: Vec<(&str, bool, bool, bool)> = terms
            .iter()
            .map(|t| (t.text.as_str(), t.prefix, t.negated, t.or))
            .collect();
        assert_eq!(
            described,
            vec![
                ("Hello", true, false, false),
                ("big world", false, false, false),
                ("spam", true, true, true),
                ("x", true, false, false),
            ]
        );
        assert!(parse_search_term("  ").is_empty());
        assert_eq!(SearchToken::parse("o12").unwrap(), SearchToken::Offset(12));
        assert_eq!(SearchToken::parse("b7").unwrap().render(), "b7");
        assert!(SearchToken::parse("x").is_err());
    }
}
