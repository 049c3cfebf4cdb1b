//! What URL previews may fetch: the IP ranges an address must stay out of (checked after DNS
//! resolution) and the URL patterns of `url_preview_url_blacklist`.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use regex::Regex;
use url::Url;

/// Refused whatever the config says, unless whitelisted: loopback, private, CGNAT, link-local,
/// multicast, reserved, documentation and unspecified ranges (the list of Synapse's sample
/// `url_preview_ip_range_blacklist`, plus the unspecified and reserved blocks).
const ALWAYS_REFUSED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

pub struct IpPolicy {
    refused: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

impl IpPolicy {
    pub fn new(blacklist: &[String], whitelist: &[String]) -> Result<Self, String> {
        let refused = always_refused().chain(blacklist.iter().cloned());
        Self::from_ranges(refused, whitelist)
    }

    /// Synapse's `ip_range_blacklist` (outbound federation): the default list when unset,
    /// replaced by a list given; `0.0.0.0` and `::` are refused whatever the list.
    pub fn replacing_defaults(
        blacklist: Option<&[String]>,
        whitelist: &[String],
    ) -> Result<Self, String> {
        let listed: Vec<String> = match blacklist {
            None => always_refused().collect(),
            Some(list) => list.to_vec(),
        };
        let refused = ["0.0.0.0".to_owned(), "::".to_owned()]
            .into_iter()
            .chain(listed);
        Self::from_ranges(refused, whitelist)
    }

    fn from_ranges(
        refused: impl IntoIterator<Item = String>,
        whitelist: &[String],
    ) -> Result<Self, String> {
        let refused = refused
            .into_iter()
            .map(|range| parse_range(&range))
            .collect::<Result<_, _>>()?;
        let allowed = whitelist
            .iter()
            .map(|range| parse_range(range))
            .collect::<Result<_, _>>()?;
        Ok(Self { refused, allowed })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
        let ip = ip.to_canonical();
        self.allowed.iter().any(|range| range.contains(&ip))
            || !self.refused.iter().any(|range| range.contains(&ip))
    }
}

fn always_refused() -> impl Iterator<Item = String> {
    ALWAYS_REFUSED.iter().map(|range| (*range).to_owned())
}

/// `10.0.0.0/8`, or a bare address for that one address.
fn parse_range(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP range"))
}

/// `url_preview_url_blacklist`: an entry blocks a URL when every part it names matches.
pub struct UrlBlacklist(Vec<Vec<(UrlPart, Regex)>>);

#[derive(Clone, Copy)]
enum UrlPart {
    Scheme,
    Netloc,
    Hostname,
    Port,
    Path,
    Query,
    Fragment,
    Username,
    Password,
}

impl UrlBlacklist {
    pub fn new(entries: &[BTreeMap<String, String>]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                entry
                    .iter()
                    .map(|(part, pattern)| Ok((url_part(part)?, matcher(pattern)?)))
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(entries))
    }

    pub fn blocks(&self, url: &Url) -> bool {
        self.0.iter().any(|entry| {
            entry
                .iter()
                .all(|(part, pattern)| pattern.is_match(&part_of(url, *part)))
        })
    }
}

fn url_part(name: &str) -> Result<UrlPart, String> {
    Ok(match name {
        "scheme" => UrlPart::Scheme,
        "netloc" => UrlPart::Netloc,
        "hostname" => UrlPart::Hostname,
        "port" => UrlPart::Port,
        "path" => UrlPart::Path,
        "query" => UrlPart::Query,
        "fragment" => UrlPart::Fragment,
        "username" => UrlPart::Username,
        "password" => UrlPart::Password,
        other => return Err(format!("`{other}` is not a part of a URL")),
    })
}

/// A regular expression when the pattern starts with `^` (as Synapse, matched from the
/// start), else a glob (`*`, `?`) over the whole part.
fn matcher(pattern: &str) -> Result<Regex, String> {
    let expression = if pattern.starts_with('^') {
        pattern.to_owned()
    } else {
        let mut expression = String::from("^");
        for c in pattern.chars() {
            match c {
                '*' => expression.push_str(".*"),
                '?' => expression.push('.'),
                c => expression.push_str(&regex::escape(&c.to_string())),
            }
        }
        expression.push('$');
        expression
    };
    Regex::new(&expression).map_err(|e| format!("`{pattern}`: {e}"))
}

/// The part as Python's `urlsplit` names it (what Synapse matches against).
fn part_of(url: &Url, part: UrlPart) -> String {
    let host = url.host_str().unwrap_or_default();
    match part {
        UrlPart::Scheme => url.scheme().to_owned(),
        UrlPart::Netloc => {
            let mut netloc = String::new();
            if !url.username().is_empty() {
                netloc.push_str(url.username());
                if let Some(password) = url.password() {
                    netloc.push(':');
                    netloc.push_str(password);
                }
                netloc.push('@');
            }
            netloc.push_str(host);
            if let Some(port) = url.port() {
                netloc.push_str(&format!(":{port}"));
            }
            netloc
        }
        UrlPart::Hostname => host.to_ascii_lowercase(),
        UrlPart::Port => url.port().map(|p| p.to_string()).unwrap_or_default(),
        UrlPart::Path => url.path().to_owned(),
        UrlPart::Query => url.query().unwrap_or_default().to_owned(),
        UrlPart::Fragment => url.fragment().unwrap_or_default().to_owned(),
        UrlPart::Username => url.username().to_owned(),
        UrlPart::Password => url.password().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused_unless_whitelisted() {
        let policy = IpPolicy::new(&["203.0.114.0/24".to_owned()], &[]).unwrap();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "203.0.114.9",
            "0.0.0.0",
        ] {
            assert!(!policy.allows(refused.parse().unwrap()), "{refused}");
        }
        assert!(policy.allows("93.184.215.14".parse().unwrap()));
        assert!(policy.allows("2606:4700::1".parse().unwrap()));
        let policy = IpPolicy::new(&[], &["127.0.0.1".to_owned()]).unwrap();
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn a_federation_blacklist_replaces_the_default() {
        let default = IpPolicy::replacing_defaults(None, &[]).unwrap();
        assert!(!default.allows("10.1.2.3".parse().unwrap()));
        assert!(default.allows("93.184.215.14".parse().unwrap()));
        let replaced = IpPolicy::replacing_defaults(Some(&["93.0.0.0/8".to_owned()]), &[]).unwrap();
        assert!(replaced.allows("10.1.2.3".parse().unwrap()));
        assert!(!replaced.allows("93.184.215.14".parse().unwrap()));
        assert!(!replaced.allows("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn url_patterns_match_as_synapse() {
        let entries: Vec<BTreeMap<String, String>> = serde_json::from_value(serde_json::json!([
            {"netloc": "*.example.com"},
            {"scheme": "http", "path": "^/private/"},
        ]))
        .unwrap();
        let blacklist = UrlBlacklist::new(&entries).unwrap();
        let blocks = |url: &str| blacklist.blocks(&Url::parse(url).unwrap());
        assert!(blocks("https://www.example.com/a"));
        assert!(!blocks("https://example.com/a"));
        assert!(blocks("http://site.test/private/x"));
        assert!(
            !blocks("https://site.test/private/x"),
            "both parts must match"
        );
        assert!(!blocks("http://site.test/public/private/"));
        assert!(
            UrlBlacklist::new(&[BTreeMap::from([("colour".to_owned(), "red".to_owned())])])
                .is_err()
        );
    }
}
