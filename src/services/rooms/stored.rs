//! Reading stored events whatever they hold. serde_json (and so ruma, and Rust clients) refuses
//! to parse JSON nested deeper than 127 levels, but skips a value it is not asked for (an ignored
//! field, a `RawValue`) without any limit. Older versions of this server stored events whose
//! content was too deep to read back; these helpers read only the fields they need, so one such
//! event never fails a whole response.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use super::limits::MAX_CONTENT_DEPTH;
pub use crate::services::json_depth::{nesting_depth, value_depth};

/// The deepest client event this server hands out before bundled aggregations are added:
/// content at most [`MAX_CONTENT_DEPTH`] levels deep, one level down in the event and two in
/// `unsigned.prev_content`. Anything deeper (stored by an older version) is not rendered.
pub const MAX_EVENT_DEPTH: usize = MAX_CONTENT_DEPTH + 2;

/// The top-level fields of a stored event, each kept as its JSON text. Fails only when the text
/// is not a JSON object.
pub fn top_level(json: &str) -> serde_json::Result<BTreeMap<String, &RawValue>> {
    serde_json::from_str(json)
}

/// Parses a stored value if it nests at most `max_depth` levels.
pub fn parse_within(raw: &RawValue, max_depth: usize) -> Option<Value> {
    if nesting_depth(raw.get()) > max_depth {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The fields of a stored event that the server itself looks at (history visibility, lazy
/// loading, redaction rights, profiles), read without parsing the rest.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub state_key: Option<String>,
    pub sender: Option<String>,
    /// The IDs, whatever the room version's reference format.
    #[serde(default, deserialize_with = "super::pdu::event_references")]
    pub prev_events: Vec<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// `None` when the text is not an event object.
    pub fn parse(json: &'a str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// One string field of the content (`membership`, `history_visibility`, `displayname`).
    pub fn content_str(&self, field: &str) -> Option<String> {
        let fields: BTreeMap<String, &RawValue> = serde_json::from_str(self.content?.get()).ok()?;
        serde_json::from_str(fields.get(field)?.get()).ok()
    }

    /// The whole content, unless it nests deeper than any event this server accepts today.
    pub fn content(&self) -> Option<Value> {
        parse_within(self.content?, MAX_CONTENT_DEPTH)
    }
}

/// The content of a stored event, if it is readable (see [`Envelope::content`]).
pub fn content(json: &str) -> Option<Value> {
    Envelope::parse(json)?.content()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::services::json_depth::tests::nested;

    #[test]
    fn fields_of_an_event_too_deep_for_serde_json_can_still_be_read() {
        let deep = nested(100); // 199 levels
        let json = serde_json::to_string(&json!({
            "type": "m.room.member", "state_key": "@a:x", "sender": "@a:x",
            "prev_events": ["$p"],
            "content": {"membership": "join", "deep": deep},
            "unsigned": {"prev_content": {"deep": nested(100)}},
        }))
        .unwrap();
        assert!(
            serde_json::from_str::<Value>(&json).is_err(),
            "too deep for serde_json"
        );
        let envelope = Envelope::parse(&json).expect("the envelope reads");
        assert_eq!(envelope.kind.as_deref(), Some("m.room.member"));
        assert_eq!(envelope.sender.as_deref(), Some("@a:x"));
        assert_eq!(envelope.prev_events, ["$p"]);
        assert_eq!(envelope.content_str("membership").as_deref(), Some("join"));
        assert_eq!(envelope.content_str("deep"), None);
        assert_eq!(envelope.content(), None, "too deep to hand out");
        let fields = top_level(&json).unwrap();
        assert_eq!(parse_within(fields["sender"], 0), Some(json!("@a:x")));
        assert_eq!(parse_within(fields["unsigned"], MAX_EVENT_DEPTH), None);
    }
}
