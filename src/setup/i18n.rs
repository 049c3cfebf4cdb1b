//! The wizard's words, one catalogue per language (`assets/i18n/<lang>.yaml`, flat `key: text`
//! maps embedded in the binary); the language comes from a `?lang=` switch, a cookie, or
//! `Accept-Language`.
//!
//! The catalogues: `en`, `fr`, `ru` and `zh`.

use std::{collections::HashMap, sync::LazyLock};

/// Languages in the order of the switcher; the first is the fallback.
pub const LANGUAGES: [&str; 4] = ["en", "fr", "ru", "zh"];

const SOURCES: [&str; 4] = [
    include_str!("../../assets/i18n/en.yaml"),
    include_str!("../../assets/i18n/fr.yaml"),
    include_str!("../../assets/i18n/ru.yaml"),
    include_str!("../../assets/i18n/zh.yaml"),
];

static CATALOGUES: LazyLock<Vec<Catalogue>> = LazyLock::new(|| {
    LANGUAGES
        .iter()
        .zip(SOURCES)
        .map(|(lang, source)| Catalogue {
            lang,
            // The catalogues are part of the binary and checked by the tests below.
            texts: serde_yaml::from_str(source).unwrap_or_default(),
        })
        .collect()
});

pub struct Catalogue {
    pub lang: &'static str,
    texts: HashMap<String, String>,
}

impl Catalogue {
    pub fn get(lang: &str) -> &'static Catalogue {
        CATALOGUES
            .iter()
            .find(|c| c.lang == lang)
            .unwrap_or(&CATALOGUES[0])
    }

    pub fn english() -> &'static Catalogue {
        &CATALOGUES[0]
    }

    /// The text of `key`; a missing key shows as `[[key]]`, which the tests look for.
    pub fn t(&self, key: &str) -> String {
        self.texts
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("[[{key}]]"))
    }

    /// The text of `key` with `{name}` replaced by `value`.
    pub fn tf(&self, key: &str, name: &str, value: &str) -> String {
        self.t(key).replace(&format!("{{{name}}}"), value)
    }

    #[cfg(test)]
    pub fn keys(&self) -> std::collections::BTreeSet<&str> {
        self.texts.keys().map(String::as_str).collect()
    }
}

/// The first language of `Accept-Language` (by quality) that has a catalogue, or English.
pub fn from_accept_language(header: &str) -> &'static str {
    let mut wanted: Vec<(f32, &str)> = header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next()?.trim();
            let quality = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((quality, tag))
        })
        .collect();
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0));
    wanted
        .iter()
        .filter_map(|(_, tag)| {
            let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
            LANGUAGES.iter().find(|l| **l == primary).copied()
        })
        .next()
        .unwrap_or(LANGUAGES[0])
}

pub fn known(lang: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|l| **l == lang).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_has_every_key_and_nothing_else() {
        let english = Catalogue::english().keys();
        assert!(english.len() > 50, "the English catalogue was read");
        for lang in LANGUAGES {
            let keys = Catalogue::get(lang).keys();
            let missing: Vec<_> = english.difference(&keys).collect();
            let extra: Vec<_> = keys.difference(&english).collect();
            assert!(missing.is_empty(), "{lang} lacks {missing:?}");
            assert!(extra.is_empty(), "{lang} has unknown keys {extra:?}");
            for key in &keys {
                assert!(
                    !Catalogue::get(lang).t(key).trim().is_empty(),
                    "{lang}: {key} is empty"
                );
            }
        }
    }

    #[test]
    fn accept_language_picks_the_best_known_language() {
        assert_eq!(from_accept_language("fr-CA,fr;q=0.9,en;q=0.8"), "fr");
        assert_eq!(from_accept_language("de,ru;q=0.5,en;q=0.4"), "ru");
        assert_eq!(from_accept_language("zh-Hans-CN"), "zh");
        assert_eq!(from_accept_language("de"), "en");
        assert_eq!(from_accept_language(""), "en");
    }
}
