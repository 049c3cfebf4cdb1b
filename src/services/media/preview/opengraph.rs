//! OpenGraph data of an HTML page: the `og:*` meta tags, with the `<title>` and the meta
//! description standing in for a missing `og:title` and `og:description`.

use std::collections::BTreeMap;

use html5gum::{Token, Tokenizer};

/// Longest text kept of any one value, in characters.
const MAX_VALUE_CHARS: usize = 1000;

pub fn parse(html: &[u8]) -> BTreeMap<String, String> {
    let mut og = BTreeMap::new();
    let mut title: Option<String> = None;
    let mut description: Option<String> = None;
    let mut in_title = false;
    for token in Tokenizer::new(html).flatten() {
        match token {
            Token::StartTag(tag) if &tag.name[..] == b"meta" => {
                let attribute = |name: &[u8]| {
                    tag.attributes
                        .get(name)
                        .map(|value| String::from_utf8_lossy(value).trim().to_owned())
                };
                let Some(content) = attribute(b"content") else {
                    continue;
                };
                // Sites write `property="og:…"` (the protocol) or `name="og:…"`.
                let key = attribute(b"property").or_else(|| attribute(b"name"));
                match key {
                    Some(key) if key.starts_with("og:") => {
                        og.entry(key).or_insert_with(|| shorten(&content));
                    }
                    Some(key) if key.eq_ignore_ascii_case("description") => {
                        description.get_or_insert_with(|| shorten(&content));
                    }
                    _ => {}
                }
            }
            Token::StartTag(tag) if &tag.name[..] == b"title" => in_title = title.is_none(),
            Token::EndTag(tag) if &tag.name[..] == b"title" => in_title = false,
            Token::String(text) if in_title => {
                let text = String::from_utf8_lossy(&text);
                title.get_or_insert_with(String::new).push_str(&text);
            }
            Token::EndTag(tag) if &tag.name[..] == b"head" && og.contains_key("og:title") => {
                break; // what a preview needs is in the head
            }
            _ => {}
        }
    }
    if let Some(title) =
        title.map(|t| shorten(t.split_whitespace().collect::<Vec<_>>().join(" ").as_str()))
        && !title.is_empty()
    {
        og.entry("og:title".to_owned()).or_insert(title);
    }
    if let Some(description) = description {
        og.entry("og:description".to_owned()).or_insert(description);
    }
    og
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_VALUE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_opengraph_tags_with_fallbacks() {
        let page = br#"<!doctype html><html><head>
            <title> The  page
            title </title>
            <meta name="description" content="Described">
            <meta property="og:image" content="/picture.png">
            <meta property="og:image" content="/second.png">
            <meta name="og:site_name" content="Site">
            </head><body><p>text</p></body></html>"#;
        let og = parse(page);
        assert_eq!(og["og:title"], "The page title");
        assert_eq!(og["og:description"], "Described");
        assert_eq!(og["og:image"], "/picture.png", "the first one wins");
        assert_eq!(og["og:site_name"], "Site");
        let og = parse(br#"<meta property="og:title" content="OG"><title>Plain</title>"#);
        assert_eq!(og["og:title"], "OG");
        assert!(parse(b"\xff\xfe not html at all <<<").is_empty());
    }
}
