//! Sizes and durations written the way Synapse reads them: `50M`, `1h`, or a bare number
//! (bytes, milliseconds).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A number of bytes: an integer, or a number with `K`, `M` or `G` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mebibytes(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, multiplier) = match text.chars().last() {
            Some('K' | 'k') => (&text[..text.len() - 1], 1024),
            Some('M' | 'm') => (&text[..text.len() - 1], 1024 * 1024),
            Some('G' | 'g') => (&text[..text.len() - 1], 1024 * 1024 * 1024),
            _ => (text, 1),
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a size (examples: 1048576, 512K, 50M, 1G)"))?;
        n.checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A span of time: an integer of milliseconds, or a number with `ms`, `s`, `m`, `h`, `d`, `w`
/// or `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let millis_per_unit: u64 = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 3600 * 1000,
            "d" => 86_400 * 1000,
            "w" => 7 * 86_400 * 1000,
            "y" => 365 * 86_400 * 1000,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration (examples: 500ms, 30s, 5m, 1h, 7d)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (examples: 30s, 5m, 1h)"))?;
        n.checked_mul(millis_per_unit)
            .map(|ms| Self(std::time::Duration::from_millis(ms)))
            .ok_or_else(|| format!("`{text}` is too long"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        const UNITS: [(u128, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ];
        for (size, unit) in UNITS {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// Both accept a YAML integer or string.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Self(n)),
            NumberOrText::Text(t) => Self::parse(&t).map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Self(std::time::Duration::from_millis(n))),
            NumberOrText::Text(t) => Self::parse(&t).map_err(de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_synapse() {
        assert_eq!(ByteSize::parse("50M").unwrap().0, 50 * 1024 * 1024);
        assert_eq!(ByteSize::parse("512K").unwrap().0, 512 * 1024);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert!(ByteSize::parse("fifty").is_err());
        assert_eq!(ByteSize::parse("50M").unwrap().to_string(), "50M");
    }

    #[test]
    fn durations_read_like_synapse() {
        assert_eq!(Duration::parse("1h").unwrap().0.as_secs(), 3600);
        assert_eq!(Duration::parse("250ms").unwrap().0.as_millis(), 250);
        assert_eq!(Duration::parse("1500").unwrap().0.as_millis(), 1500);
        assert!(Duration::parse("1 fortnight").is_err());
        assert_eq!(Duration::parse("5m").unwrap().to_string(), "5m");
    }
}
