//! Event filters (`RoomEventFilter`) applied to client events, with the spec's `*` wildcards.

use ruma::api::client::filter::RoomEventFilter;
use serde_json::Value;

fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// Does an event type pass a filter's `types` and `not_types` (account data's filters)?
pub fn type_allowed(types: Option<&[String]>, not_types: &[String], event_type: &str) -> bool {
    !not_types.iter().any(|p| type_matches(p, event_type))
        && types.is_none_or(|types| types.iter().any(|p| type_matches(p, event_type)))
}

/// Whether a filter lets every event through: [`room_event_matches`] need not look at them.
pub fn matches_every_event(filter: &RoomEventFilter) -> bool {
    filter.not_types.is_empty()
        && filter.types.is_none()
        && filter.not_senders.is_empty()
        && filter.senders.is_none()
        && filter.url_filter.is_none()
}

/// Does the client event pass the filter's type and sender conditions?
pub fn room_event_matches(filter: &RoomEventFilter, event: &Value) -> bool {
    let event_type = event["type"].as_str().unwrap_or_default();
    let sender = event["sender"].as_str().unwrap_or_default();
    if filter.not_types.iter().any(|p| type_matches(p, event_type)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|p| type_matches(p, event_type))
    {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.iter().any(|s| s.as_str() == sender)
    {
        return false;
    }
    if let Some(contains_url) = filter
        .url_filter
        .map(|f| f == ruma::api::client::filter::UrlFilter::EventsWithUrl)
    {
        let has_url = event["content"].get("url").is_some();
        if has_url != contains_url {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wildcards_and_exclusions() {
        let mut filter = RoomEventFilter::default();
        filter.types = Some(vec!["m.room.*".to_owned()]);
        filter.not_types = vec!["m.room.member".to_owned()];
        assert!(room_event_matches(
            &filter,
            &json!({"type": "m.room.message", "sender": "@a:x"})
        ));
        assert!(!room_event_matches(
            &filter,
            &json!({"type": "m.room.member", "sender": "@a:x"})
        ));
        assert!(!room_event_matches(
            &filter,
            &json!({"type": "m.reaction", "sender": "@a:x"})
        ));
    }
}
