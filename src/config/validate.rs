//! Checks that serde cannot express: each failure names the key and the reason.

use std::net::IpAddr;

use ruma::ServerName;

use super::Config;

type Invalid = (&'static str, String);

impl Config {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if <&ServerName>::try_from(self.server_name.as_str()).is_err() {
            return Err((
                "server_name",
                format!(
                    "`{}` is not a valid server name (a host name or IP literal, optionally with a port)",
                    self.server_name
                ),
            ));
        }
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err((
                "public_baseurl",
                format!("`{url}` must start with https:// or http://"),
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err((
                "log_level",
                format!(
                    "`{}` is not one of error, warn, info, debug, trace",
                    self.log_level
                ),
            ));
        }
        for (key, value) in [
            ("client_header_timeout", self.client_header_timeout),
            ("client_body_timeout", self.client_body_timeout),
            ("client_body_deadline", self.client_body_deadline),
            ("client_upload_deadline", self.client_upload_deadline),
        ] {
            if value.0.is_zero() {
                return Err((key, "must be longer than 0".to_owned()));
            }
        }
        for (key, value) in [
            ("client_max_connections", self.client_max_connections),
            (
                "client_max_connections_per_address",
                self.client_max_connections_per_address,
            ),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".to_owned()));
            }
        }
        if self.listeners.is_empty() {
            return Err(("listeners", "at least one listener is needed".to_owned()));
        }
        for listener in &self.listeners {
            if listener.kind != "http" {
                return Err((
                    "listeners.type",
                    format!("`{}` is not supported; use `http`", listener.kind),
                ));
            }
            for address in &listener.bind_addresses {
                if address.parse::<IpAddr>().is_err() {
                    return Err((
                        "listeners.bind_addresses",
                        format!("`{address}` is not an IP address"),
                    ));
                }
            }
            for entry in &listener.trusted_proxies {
                if crate::turn::peer_filter::parse_network(entry).is_none() {
                    return Err((
                        "listeners.trusted_proxies",
                        format!("`{entry}` is not an IP address or CIDR range"),
                    ));
                }
            }
            for name in listener.resources.iter().flat_map(|r| &r.names) {
                if !matches!(name.as_str(), "client" | "federation" | "acme" | "redirect") {
                    return Err((
                        "listeners.resources.names",
                        format!("`{name}` is not one of client, federation, acme, redirect"),
                    ));
                }
            }
        }
        self.validate_front_door()?;
        self.validate_turn_relay()?;
        if !self.listeners.iter().any(|l| l.serves("client")) {
            return Err(("listeners", "no listener serves `client`".to_owned()));
        }
        if self.enable_registration
            && !self.registration_requires_token
            && !self.enable_registration_without_verification
        {
            // Synapse refuses to start in this case too: open registration without any check is
            // how spam accounts are made.
            return Err((
                "enable_registration",
                "open registration without verification invites spam: set \
                 `registration_requires_token: true`, or `enable_registration_without_verification: true` \
                 if you really want it"
                    .to_owned(),
            ));
        }
        if self
            .max_event_delay_duration
            .is_some_and(|max| max.0.is_zero())
        {
            // Synapse's check: unset is the way to turn delayed events off.
            return Err((
                "max_event_delay_duration",
                "must be a positive value if set".to_owned(),
            ));
        }
        if !crate::services::rooms::SUPPORTED_ROOM_VERSIONS
            .contains(&self.default_room_version.as_str())
        {
            return Err((
                "default_room_version",
                format!(
                    "`{}` is not a supported room version ({})",
                    self.default_room_version,
                    crate::services::rooms::SUPPORTED_ROOM_VERSIONS.join(", ")
                ),
            ));
        }
        for (key, limit) in [
            ("rc_login.address", self.rc_login.address),
            ("rc_login.account", self.rc_login.account),
            ("rc_login.failed_attempts", self.rc_login.failed_attempts),
            ("rc_registration", self.rc_registration),
            ("rc_message", self.rc_message),
            ("rc_joins.local", self.rc_joins.local),
            ("rc_joins.remote", self.rc_joins.remote),
            ("rc_invites.per_room", self.rc_invites.per_room),
            ("rc_invites.per_user", self.rc_invites.per_user),
            ("rc_invites.per_issuer", self.rc_invites.per_issuer),
            ("rc_room_creation", self.rc_room_creation),
            ("rc_media_create", self.rc_media_create),
            ("rc_delayed_event_mgmt", self.rc_delayed_event_mgmt),
        ]
        .into_iter()
        .chain(
            self.rc_admin_redaction
                .map(|limit| ("rc_admin_redaction", limit)),
        ) {
            let valid =
                limit.per_second.is_finite() && limit.per_second > 0.0 && limit.burst_count >= 1.0;
            if !valid {
                return Err((
                    key,
                    "per_second must be above 0 and burst_count at least 1".to_owned(),
                ));
            }
        }
        if let Some(secret) = &self.registration_shared_secret
            && secret.is_empty()
        {
            return Err(("registration_shared_secret", "must not be empty".to_owned()));
        }
        self.validate_federation_client()?;
        super::media::validate(self)?;
        super::backup::validate(self)?;
        super::federation::validate(self)?;
        Ok(())
    }

    /// Outbound federation's keys, so that a bad range or name stops the start, not a request.
    fn validate_federation_client(&self) -> Result<(), Invalid> {
        use crate::services::media::preview::policy::IpPolicy;
        if let Some(blacklist) = &self.ip_range_blacklist
            && let Err(e) = IpPolicy::replacing_defaults(Some(blacklist), &[])
        {
            return Err(("ip_range_blacklist", e));
        }
        if let Err(e) = IpPolicy::replacing_defaults(None, &self.ip_range_whitelist) {
            return Err(("ip_range_whitelist", e));
        }
        let names = self.federation_domain_whitelist.iter().flatten();
        if let Some(name) = names
            .into_iter()
            .find(|name| <&ServerName>::try_from(name.as_str()).is_err())
        {
            return Err((
                "federation_domain_whitelist",
                format!("`{name}` is not a server name"),
            ));
        }
        let backoff = &self.federation;
        if backoff.client_timeout.0.is_zero() {
            return Err(("federation.client_timeout", "must not be 0".to_owned()));
        }
        if !(backoff.destination_retry_multiplier >= 1.0
            && backoff.destination_retry_multiplier <= 1000.0)
        {
            return Err((
                "federation.destination_retry_multiplier",
                "must be between 1 and 1000".to_owned(),
            ));
        }
        if backoff.destination_min_retry_interval.0.is_zero()
            || backoff.destination_max_retry_interval.0 < backoff.destination_min_retry_interval.0
        {
            return Err((
                "federation.destination_max_retry_interval",
                "must be at least destination_min_retry_interval, which must not be 0".to_owned(),
            ));
        }
        Ok(())
    }

    fn validate_front_door(&self) -> Result<(), Invalid> {
        if self.tls_certificate_path.is_some() != self.tls_private_key_path.is_some() {
            return Err((
                "tls_certificate_path",
                "`tls_certificate_path` and `tls_private_key_path` go together".to_owned(),
            ));
        }
        if self.acme.enabled {
            if self.tls_certificate_path.is_some() {
                return Err((
                    "acme.enabled",
                    "either ACME or `tls_certificate_path` provides the certificate, not both"
                        .to_owned(),
                ));
            }
            if !self.acme.accept_terms_of_service {
                return Err((
                    "acme.accept_terms_of_service",
                    "the CA's terms of service must be accepted (`true`) to get certificates"
                        .to_owned(),
                ));
            }
            if !(self.acme.url.starts_with("https://") || self.acme.url.starts_with("http://")) {
                return Err(("acme.url", format!("`{}` is not a URL", self.acme.url)));
            }
        }
        if !self.element.path_prefix.starts_with('/') || self.element.path_prefix.len() < 2 {
            return Err((
                "element.path_prefix",
                format!(
                    "`{}` must be a path below `/`, like `/element`",
                    self.element.path_prefix
                ),
            ));
        }
        Ok(())
    }

    fn validate_turn_relay(&self) -> Result<(), Invalid> {
        if self.turn_min_port > self.turn_max_port {
            return Err((
                "turn_min_port",
                format!(
                    "{} is above `turn_max_port` ({})",
                    self.turn_min_port, self.turn_max_port
                ),
            ));
        }
        for address in &self.turn_bind_addresses {
            if address.parse::<IpAddr>().is_err() {
                return Err((
                    "turn_bind_addresses",
                    format!("`{address}` is not an IP address"),
                ));
            }
        }
        for entry in &self.turn_allowed_peer_ips {
            if crate::turn::peer_filter::parse_network(entry).is_none() {
                return Err((
                    "turn_allowed_peer_ips",
                    format!("`{entry}` is not an IP address or CIDR range"),
                ));
            }
        }
        for server in &self.turn_stun_servers {
            if server
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err((
                    "turn_stun_servers",
                    format!("`{server}` is not `host:port`"),
                ));
            }
        }
        if self.turn_relay_enabled && self.turn_public_ip_check_interval.0.as_secs() < 1 {
            return Err((
                "turn_public_ip_check_interval",
                "must be at least 1s".to_owned(),
            ));
        }
        if self.turn_max_allocation_lifetime.0.as_secs() < 60 {
            return Err((
                "turn_max_allocation_lifetime",
                "must be at least 1m".to_owned(),
            ));
        }
        if let Some(secret) = &self.turn_shared_secret
            && secret.is_empty()
        {
            return Err(("turn_shared_secret", "must not be empty".to_owned()));
        }
        Ok(())
    }
}

/// What `appliance config check` found wrong with the files and directories the config names:
/// `errors` stop the server (or the feature), `warnings` are worth knowing.
#[derive(Debug, Default)]
pub struct FileReport {
    pub errors: Vec<(&'static str, String)>,
    pub warnings: Vec<(&'static str, String)>,
}

impl Config {
    /// Checks that the files the config names exist and can be read by this user, and that its
    /// directories are directories. Separate from `validate`, which only reads the text: the
    /// wizard and the tests parse configs whose files are not there yet.
    pub fn check_files(&self) -> FileReport {
        let mut report = FileReport::default();
        let files = [
            ("tls_certificate_path", self.tls_certificate_path.as_ref()),
            ("tls_private_key_path", self.tls_private_key_path.as_ref()),
            (
                "acme.directory_ca_path",
                self.acme.directory_ca_path.as_ref(),
            ),
        ];
        for (key, path) in files {
            let Some(path) = path else { continue };
            match std::fs::File::open(path).and_then(|f| f.metadata()) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => report
                    .errors
                    .push((key, format!("{} is not a file", path.display()))),
                Err(e) => report
                    .errors
                    .push((key, format!("cannot read {}: {e}", path.display()))),
            }
        }
        // The registrations of application services are read as the server reads them at start.
        if let Ok(server_name) = ruma::ServerName::parse(&self.server_name)
            && let Err(e) = crate::services::appservice::AppServices::load(
                &self.app_service_config_files,
                &server_name,
            )
        {
            let message = e.to_string();
            let message = message.trim_start_matches("app_service_config_files: ");
            report
                .errors
                .push(("app_service_config_files", message.to_owned()));
        }
        let directories = [
            ("data_dir", Some(self.data_dir.clone())),
            ("media_store_path", Some(self.media_store_path())),
        ];
        for (key, path) in directories {
            let Some(path) = path else { continue };
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => report
                    .errors
                    .push((key, format!("{} is not a directory", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.warnings.push((
                    key,
                    format!(
                        "{} does not exist yet (the server creates it)",
                        path.display()
                    ),
                )),
                Err(e) => report
                    .errors
                    .push((key, format!("cannot read {}: {e}", path.display()))),
            }
        }
        if self.element.enabled {
            let dir = self.element_release_dir();
            if !self.element_installed() {
                report.warnings.push((
                    "element.path",
                    format!(
                        "no Element release in {} (Element is not served): download a release \
                         tarball and install it with `appliance element install TARBALL`",
                        dir.display()
                    ),
                ));
            }
        }
        report
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" with the closest known name added, so
/// a typo in any section (`max_uplod_size`, `acme.contact_emial`) points at the right key.
pub(super) fn suggest_known_key(message: &str) -> Option<String> {
    // serde_yaml puts the section in front: "acme: unknown field `…`".
    let rest = message.split_once("unknown field `")?.1;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let known = expected.split('`').skip(1).step_by(2);
    let (distance, closest) = known
        .map(|name| (edit_distance(unknown, name), name))
        .min()?;
    // Close enough to be a typo: a third of the name, at least 2 edits.
    (distance <= (unknown.chars().count() / 3).max(2)).then(|| closest.to_owned())
}

/// Levenshtein distance (insertions, deletions, substitutions), with the two-row table.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_known_key() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let message = "unknown field `max_uplod_size`, expected one of `server_name`, \
                       `max_upload_size`, `max_image_pixels`";
        assert_eq!(
            suggest_known_key(message).as_deref(),
            Some("max_upload_size")
        );
        let far = "unknown field `colour`, expected one of `server_name`, `listeners`";
        assert_eq!(suggest_known_key(far), None);
        // serde's wording for a struct with one or two fields.
        assert_eq!(
            suggest_known_key("unknown field `enabld`, expected `enabled`").as_deref(),
            Some("enabled")
        );
    }
}
