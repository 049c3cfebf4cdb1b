//! How deeply client-supplied JSON may nest, for everything this server stores and later hands
//! back inside a larger response: event content, account data, to-device messages, keys, key
//! backups, push rules.
//!
//! serde_json refuses to parse anything nested deeper than 127 levels; ruma, this server's own
//! reads and Rust clients (matrix-rust-sdk) all parse with it. A value that parsed when it
//! arrived is shown further down in responses: account data 7 levels down in a room of /sync, a
//! to-device message 4, a device's keys 3 in `/keys/query`, a one-time key 4 in `/keys/claim`, a
//! backed-up session's data 5 in `/room_keys/keys`, a push rule's tweak value 12 in /sync.
//! Accepted as is, one such value made every later response that carries it unreadable, for its
//! owner and, through to-device messages and keys, for other users. So each stored value is
//! refused at the door past [`MAX_DEPTH`] (`400 M_BAD_JSON`), and one stored by an older version
//! is left out of responses with one warning.

use std::{collections::BTreeSet, sync::Mutex};

use serde_json::Value;

use crate::error::{Error, Result};

/// How deeply a stored value may nest objects and arrays (the value itself is level 1).
///
/// One limit for every kind: the deepest place a response puts a stored value is 13 levels down
/// (a room event in a `/search` result's context, see `rooms::limits`), so 100 leaves room for
/// every wrapper; real data nests a handful of levels.
pub const MAX_DEPTH: usize = 100;

/// `400 M_BAD_JSON` when `value` nests deeper than [`MAX_DEPTH`]; `what` names it for the
/// client ("Account data content").
pub fn check(what: &str, value: &Value) -> Result<()> {
    if value_depth(value) > MAX_DEPTH {
        return Err(too_deep(what));
    }
    Ok(())
}

/// [`check`] for JSON text (a `RawValue` from a request), without parsing it.
pub fn check_text(what: &str, json: &str) -> Result<()> {
    if nesting_depth(json) > MAX_DEPTH {
        return Err(too_deep(what));
    }
    Ok(())
}

fn too_deep(what: &str) -> Error {
    Error::bad_json(format!(
        "{what} nests objects and arrays more than {MAX_DEPTH} levels deep"
    ))
}

/// A stored value, parsed, if it is JSON this server may hand out: at most [`MAX_DEPTH`] levels
/// deep. Otherwise (stored by an older version) `None`, with a warning the first time `what`
/// (which names the value and its owner, never its content) is met.
pub fn readable(what: impl FnOnce() -> String, json: &str) -> Option<Value> {
    if nesting_depth(json) <= MAX_DEPTH
        && let Ok(value) = serde_json::from_str(json)
    {
        return Some(value);
    }
    let what = what();
    if first_time(&what) {
        tracing::warn!("stored {what} left out of responses: nested too deep or not JSON");
    }
    None
}

/// Whether `key` is met for the first time since the start: every response that leaves a stored
/// value out meets it again, and one warning per value is enough (at most 1,000 remembered).
pub fn first_time(key: &str) -> bool {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.len() >= 1_000 {
        return !seen.contains(key);
    }
    seen.insert(key.to_owned())
}

/// How deeply a JSON text nests objects and arrays (`{}` is 1, a string 0). The text is assumed
/// to be valid JSON (it was stored as such); brackets inside strings do not count.
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How deeply a JSON value nests objects and arrays (`{}` is 1, a string 0), without recursion.
pub fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A value nesting `2 * depth - 1` levels, with brackets and escapes inside its one string.
    pub(crate) fn nested(depth: usize) -> Value {
        let mut value = json!({"leaf": "]]]}}}\"\\"});
        for _ in 1..depth {
            value = json!({ "n": [value] });
        }
        value
    }

    #[test]
    fn depth_is_measured_outside_strings_and_without_recursion() {
        assert_eq!(nesting_depth("\"{[\""), 0);
        assert_eq!(nesting_depth("{}"), 1);
        assert_eq!(nesting_depth(r#"{"a":"\"{","b":[1,{"c":[]}]}"#), 4);
        let deep = nested(150);
        let text = serde_json::to_string(&deep).unwrap();
        // `{"n": [ ... ]}` adds two levels per step.
        assert_eq!(nesting_depth(&text), 2 * 149 + 1);
        assert_eq!(value_depth(&deep), 2 * 149 + 1);
        assert_eq!(value_depth(&json!("x")), 0);
        assert_eq!(value_depth(&json!({"a": {}, "b": [[]]})), 3);
    }

    #[test]
    fn the_limit_is_checked_on_values_and_texts_and_reads_stop_at_it() {
        let at_limit = nested(MAX_DEPTH / 2); // 2 * 49 + 1 = 99 levels
        let over = json!([[at_limit.clone()]]); // 101
        assert!(check("x", &at_limit).is_ok());
        let error = check("Account data content", &over).unwrap_err();
        assert!(format!("{error:?}").contains("Account data content nests"));
        let (ok, too_deep) = (at_limit.to_string(), over.to_string());
        assert!(check_text("x", &ok).is_ok());
        assert!(check_text("x", &too_deep).is_err());
        assert_eq!(readable(|| "x".into(), &ok), Some(at_limit));
        assert_eq!(readable(|| "test value".into(), &too_deep), None);
        assert_eq!(readable(|| "test value".into(), "{"), None);
        assert!(!first_time("test value"), "warned once already");
    }
}
