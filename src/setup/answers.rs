//! What the person setting up the box chose, step by step, and how those choices become a
//! `Config`. The browser wizard and `appliance setup --yes` fill the same `Answers` and run the
//! same checks, so both paths write the same config.

use std::{net::IpAddr, path::PathBuf};

use ruma::{OwnedServerName, ServerName};

use crate::{
    config::{AcmeConfig, Config, ElementConfig, Listener, ListenerResource, PasswordPolicy},
    services::{
        passwords::policy_violation,
        users::{new_user_id, typed_user_name},
    },
};

/// Let's Encrypt's staging directory, for a dry run that does not count against the rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsChoice {
    #[default]
    Acme,
    Files,
    SelfSigned,
}

impl TlsChoice {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "acme" => Some(Self::Acme),
            "files" => Some(Self::Files),
            "self-signed" => Some(Self::SelfSigned),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acme => "acme",
            Self::Files => "files",
            Self::SelfSigned => "self-signed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationChoice {
    #[default]
    Closed,
    Token,
    Open,
}

impl RegistrationChoice {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "closed" => Some(Self::Closed),
            "token" => Some(Self::Token),
            "open" => Some(Self::Open),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Token => "token",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ElementChoice {
    #[default]
    Host,
    Path,
    Off,
}

impl ElementChoice {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "host" => Some(Self::Host),
            "path" => Some(Self::Path),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Path => "path",
            Self::Off => "off",
        }
    }
}

/// Every choice of the wizard. `Default` is what a fresh wizard proposes.
#[derive(Debug, Clone)]
pub struct Answers {
    pub server_name: String,
    pub host: String,
    /// The server name's web traffic reaches this box, so it serves `/.well-known/matrix/server`.
    pub wellknown_here: bool,
    pub tls: TlsChoice,
    pub acme_email: String,
    pub acme_terms: bool,
    pub acme_staging: bool,
    pub tls_certificate_path: String,
    pub tls_private_key_path: String,
    pub admin_user: String,
    /// Kept in memory only until apply, which hashes it.
    pub admin_password: String,
    pub registration: RegistrationChoice,
    pub turn_enabled: bool,
    pub turn_listen_port: u16,
    pub turn_min_port: u16,
    pub turn_max_port: u16,
    pub turn_external_ip: String,
    pub element: ElementChoice,
    pub element_host: String,
    pub federation: bool,
    /// `password_config.policy` of the config written: the admin's password is checked against
    /// it, as every later password is.
    pub password_policy: PasswordPolicy,
}

impl Default for Answers {
    fn default() -> Self {
        let defaults = Config::default();
        Self {
            server_name: String::new(),
            host: String::new(),
            wellknown_here: false,
            tls: TlsChoice::default(),
            acme_email: String::new(),
            acme_terms: false,
            acme_staging: false,
            tls_certificate_path: String::new(),
            tls_private_key_path: String::new(),
            admin_user: "admin".to_owned(),
            admin_password: String::new(),
            registration: RegistrationChoice::default(),
            turn_enabled: true,
            turn_listen_port: defaults.turn_listen_port,
            turn_min_port: defaults.turn_min_port,
            turn_max_port: defaults.turn_max_port,
            turn_external_ip: String::new(),
            element: ElementChoice::default(),
            element_host: String::new(),
            federation: true,
            password_policy: PasswordPolicy::wizard(),
        }
    }
}

/// A field that failed its check and the catalogue key of the message shown beside it.
pub type FieldError = (&'static str, &'static str);

impl Answers {
    /// The answers an installed box's config corresponds to, for `setup --reconfigure`.
    pub fn from_config(config: &Config) -> Self {
        let host = config
            .public_baseurl
            .as_deref()
            .and_then(|url| url.split("://").nth(1))
            .map(|rest| rest.split(['/', ':']).next().unwrap_or_default().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| config.server_name.clone());
        let tls = if config.acme.enabled {
            TlsChoice::Acme
        } else if config.tls_certificate_path.is_some() {
            TlsChoice::Files
        } else {
            TlsChoice::SelfSigned
        };
        let path_text = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        Self {
            wellknown_here: config.serve_server_wellknown && config.server_name != host,
            server_name: config.server_name.clone(),
            tls,
            acme_email: config.acme.contact_email.clone().unwrap_or_default(),
            acme_terms: config.acme.accept_terms_of_service,
            acme_staging: config.acme.url == LETS_ENCRYPT_STAGING,
            tls_certificate_path: path_text(&config.tls_certificate_path),
            tls_private_key_path: path_text(&config.tls_private_key_path),
            // Reconfiguring keeps the admins there are; a new one is optional.
            admin_user: String::new(),
            admin_password: String::new(),
            registration: if !config.enable_registration {
                RegistrationChoice::Closed
            } else if config.registration_requires_token {
                RegistrationChoice::Token
            } else {
                RegistrationChoice::Open
            },
            turn_enabled: config.turn_relay_enabled,
            turn_listen_port: config.turn_listen_port,
            turn_min_port: config.turn_min_port,
            turn_max_port: config.turn_max_port,
            turn_external_ip: config
                .turn_external_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            element: if !config.element.enabled {
                ElementChoice::Off
            } else if config.element.host.is_some() {
                ElementChoice::Host
            } else {
                ElementChoice::Path
            },
            element_host: config.element.host.clone().unwrap_or_default(),
            federation: config
                .listeners
                .iter()
                .any(|l| l.serves("federation") && l.tls),
            password_policy: config.password_config.policy.clone(),
            host,
        }
    }

    /// The text of a check's catalogue key, with the policy's minimum length filled in.
    pub fn error_text(&self, tr: &super::i18n::Catalogue, key: &str) -> String {
        tr.tf(
            key,
            "length",
            &self.password_policy.minimum_length.to_string(),
        )
    }

    pub fn delegated(&self) -> bool {
        self.server_name != self.host
    }

    /// The Element host name proposed when none was typed: `element.<server name>`.
    pub fn element_host_or_default(&self) -> String {
        if self.element_host.is_empty() {
            format!("element.{}", server_name_host(&self.server_name))
        } else {
            self.element_host.clone()
        }
    }

    pub fn check_names(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.server_name.is_empty() {
            errors.push(("server_name", "error.required"));
        } else if <&ServerName>::try_from(self.server_name.as_str()).is_err()
            || self.server_name.contains(char::is_whitespace)
        {
            errors.push(("server_name", "error.server_name"));
        }
        if self.host.is_empty() {
            errors.push(("host", "error.required"));
        } else if !is_host_name(&self.host) {
            errors.push(("host", "error.host"));
        }
        errors
    }

    pub fn check_tls(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match self.tls {
            TlsChoice::Acme => {
                if !is_email(&self.acme_email) {
                    errors.push(("acme_email", "error.email"));
                }
                if !self.acme_terms {
                    errors.push(("acme_terms", "error.acme_terms"));
                }
            }
            TlsChoice::Files => {
                for (field, path) in [
                    ("tls_certificate_path", &self.tls_certificate_path),
                    ("tls_private_key_path", &self.tls_private_key_path),
                ] {
                    if path.is_empty() {
                        errors.push((field, "error.required"));
                    } else if !PathBuf::from(path).is_absolute() {
                        errors.push((field, "error.absolute_path"));
                    } else if std::fs::File::open(path).is_err() {
                        errors.push((field, "error.unreadable_file"));
                    }
                }
            }
            TlsChoice::SelfSigned => {}
        }
        errors
    }

    /// `optional` on reconfigure: an empty user name then adds nobody.
    pub fn check_admin(&self, password_again: &str, optional: bool) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if optional && self.admin_user.is_empty() && self.admin_password.is_empty() {
            return errors;
        }
        if self.admin_user.is_empty() {
            errors.push(("admin_user", "error.required"));
        } else if !is_localpart(&self.admin_user, &self.server_name) {
            errors.push(("admin_user", "error.localpart"));
        }
        if let Some(violation) = policy_violation(&self.password_policy, &self.admin_password) {
            errors.push(("admin_password", violation.catalogue_key()));
        } else if self.admin_password != password_again {
            errors.push(("admin_password_again", "error.password_mismatch"));
        }
        errors
    }

    pub fn check_calls(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !self.turn_enabled {
            return errors;
        }
        if self.turn_listen_port == 0 {
            errors.push(("turn_listen_port", "error.port"));
        }
        if self.turn_min_port == 0 {
            errors.push(("turn_min_port", "error.port"));
        }
        if self.turn_max_port == 0 || self.turn_min_port > self.turn_max_port {
            errors.push(("turn_max_port", "error.port_range"));
        }
        if !self.turn_external_ip.is_empty() && self.turn_external_ip.parse::<IpAddr>().is_err() {
            errors.push(("turn_external_ip", "error.ip"));
        }
        errors
    }

    pub fn check_element(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.element == ElementChoice::Host {
            let host = self.element_host_or_default();
            if !is_host_name(&host) {
                errors.push(("element_host", "error.host"));
            } else if host == self.host {
                errors.push(("element_host", "error.element_same_host"));
            }
        }
        errors
    }

    /// Every check of every step, for the summary and the command line.
    pub fn check_all(&self, admin_optional: bool) -> Vec<FieldError> {
        let mut errors = self.check_names();
        errors.extend(self.check_tls());
        errors.extend(self.check_admin(&self.admin_password.clone(), admin_optional));
        errors.extend(self.check_calls());
        errors.extend(self.check_element());
        errors
    }

    /// The config these answers describe, on top of `base` (the defaults on a new box, the
    /// current config on reconfigure, so keys the wizard does not ask about are kept).
    /// `plain_listener` replaces the installed box's listeners by one plain-HTTP listener: the
    /// development server has no TLS and no privileged ports.
    pub fn to_config(&self, base: &Config, plain_listener: Option<Listener>) -> Config {
        let mut config = base.clone();
        config.server_name = self.server_name.clone();
        config.public_baseurl = Some(format!("https://{}/", self.host));
        let development = plain_listener.is_some();
        config.listeners = match plain_listener {
            Some(listener) => {
                // What is really served: plain HTTP on this address, so that well-known answers,
                // Element's config and the checklist name it rather than the installed box's TLS.
                config.public_baseurl = Some(plain_url(&listener));
                vec![listener]
            }
            None => installed_listeners(self.federation),
        };
        config.tls_certificate_path = None;
        config.tls_private_key_path = None;
        config.acme = AcmeConfig {
            enabled: false,
            ..base.acme.clone()
        };
        match self.tls {
            TlsChoice::Acme => {
                config.acme = AcmeConfig {
                    enabled: true,
                    url: if self.acme_staging {
                        LETS_ENCRYPT_STAGING.to_owned()
                    } else {
                        crate::config::AcmeConfig::default().url
                    },
                    contact_email: Some(self.acme_email.clone()),
                    accept_terms_of_service: true,
                    ..base.acme.clone()
                }
            }
            TlsChoice::Files => {
                config.tls_certificate_path = Some(self.tls_certificate_path.clone().into());
                config.tls_private_key_path = Some(self.tls_private_key_path.clone().into());
            }
            TlsChoice::SelfSigned => {}
        }
        if development {
            // No TLS listener: a certificate would be neither used nor true.
            config.acme.enabled = false;
            config.tls_certificate_path = None;
            config.tls_private_key_path = None;
        }
        // Other servers reach a server over TLS only: a development server has no federation
        // to announce, so `/.well-known/matrix/server` answers 404 there.
        config.serve_server_wellknown =
            self.federation && !development && (!self.delegated() || self.wellknown_here);
        (
            config.enable_registration,
            config.registration_requires_token,
            config.enable_registration_without_verification,
        ) = match self.registration {
            RegistrationChoice::Closed => (false, false, false),
            RegistrationChoice::Token => (true, true, false),
            RegistrationChoice::Open => (true, false, true),
        };
        config.password_config.policy = self.password_policy.clone();
        config.turn_relay_enabled = self.turn_enabled;
        config.turn_listen_port = self.turn_listen_port;
        config.turn_min_port = self.turn_min_port;
        config.turn_max_port = self.turn_max_port;
        config.turn_external_ip = self.turn_external_ip.parse().ok();
        config.element = ElementConfig {
            enabled: self.element != ElementChoice::Off,
            // A host name of its own needs DNS, which a development machine does not have.
            host: (self.element == ElementChoice::Host && !development)
                .then(|| self.element_host_or_default()),
            ..base.element.clone()
        };
        config
    }
}

/// `http://<address>:<port>/` of a plain listener (loopback for an unspecified address).
pub fn plain_url(listener: &Listener) -> String {
    let ip = listener
        .bind_addresses
        .first()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .map_or(IpAddr::from([127, 0, 0, 1]), |ip| match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            other => other,
        });
    format!("http://{}/", std::net::SocketAddr::new(ip, listener.port))
}

/// Port 80 for ACME challenges and the redirect to https, 443 for clients (and Element), 8448
/// for other servers when federation is on; every interface.
fn installed_listeners(federation: bool) -> Vec<Listener> {
    let listener = |port: u16, tls: bool, names: &[&str]| Listener {
        port,
        bind_addresses: vec!["::".to_owned()],
        tls,
        resources: vec![ListenerResource {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        }],
        ..Listener::default()
    };
    let mut listeners = vec![
        listener(80, false, &["acme", "redirect"]),
        listener(443, true, &["client"]),
    ];
    if federation {
        listeners.push(listener(8448, true, &["federation"]));
    }
    listeners
}

/// The host part of a server name (`example.org:8448` -> `example.org`).
pub fn server_name_host(server_name: &str) -> &str {
    if server_name.starts_with('[') {
        return server_name
            .split_once(']')
            .map_or(server_name, |(h, _)| &server_name[..h.len() + 1]);
    }
    server_name.split(':').next().unwrap_or(server_name)
}

/// A DNS host name (letters, digits, hyphens, dots), or an IP address for a LAN-only box.
pub fn is_host_name(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    host.len() <= 253
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && is_host_name(domain)
    }) && !text.contains(char::is_whitespace)
}

/// The server name the wizard checks user names against: the chosen one, or a stand-in while
/// it is not valid yet (the names step reports that).
fn server_name_or_stand_in(server_name: &str) -> OwnedServerName {
    ServerName::parse(server_name)
        .unwrap_or_else(|_| ServerName::parse("localhost").expect("a literal server name"))
}

/// The admin's user name as typed, normalised as every new user name is
/// (`services::users::typed_user_name`: `@alice:<server name>` or `Alice` is `alice`).
pub fn normalize_user_name(typed: &str, server_name: &str) -> String {
    typed_user_name(typed.trim(), &server_name_or_stand_in(server_name))
}

/// Whether a new account may have this localpart: the homeserver's own rules
/// (`services::users::new_user_id`), so the wizard accepts exactly what registration does.
pub fn is_localpart(localpart: &str, server_name: &str) -> bool {
    new_user_id(localpart, &server_name_or_stand_in(server_name)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Answers {
        Answers {
            server_name: "example.org".into(),
            host: "matrix.example.org".into(),
            tls: TlsChoice::SelfSigned,
            admin_password: "correct horse battery staple".into(),
            ..Answers::default()
        }
    }

    #[test]
    fn the_config_of_the_answers_is_valid_and_says_what_was_chosen() {
        let answers = complete();
        assert!(answers.check_all(false).is_empty());
        let config = answers.to_config(&Config::default(), None);
        let yaml = serde_yaml::to_string(&config).unwrap();
        let parsed = Config::parse(&yaml, std::path::Path::new("test.yaml")).unwrap();
        assert_eq!(
            parsed.public_baseurl.as_deref(),
            Some("https://matrix.example.org/")
        );
        assert!(
            !parsed.serve_server_wellknown,
            "delegated: served by the main site"
        );
        assert_eq!(parsed.listeners.len(), 3);
        assert!(parsed.listeners[2].serves("federation"));
        assert_eq!(parsed.element.host.as_deref(), Some("element.example.org"));
        assert!(!parsed.acme.enabled && parsed.tls_certificate_path.is_none());
    }

    #[test]
    fn reconfigure_reads_back_the_same_answers() {
        let mut answers = complete();
        answers.tls = TlsChoice::Acme;
        answers.acme_email = "ops@example.org".into();
        answers.acme_terms = true;
        answers.acme_staging = true;
        answers.registration = RegistrationChoice::Token;
        answers.federation = false;
        answers.element = ElementChoice::Path;
        let config = answers.to_config(&Config::default(), None);
        let again = Answers::from_config(&config);
        assert_eq!(
            again.to_config(&config, None).public_baseurl,
            config.public_baseurl
        );
        assert_eq!(again.host, "matrix.example.org");
        assert_eq!(again.tls, TlsChoice::Acme);
        assert!(again.acme_staging);
        assert_eq!(again.registration, RegistrationChoice::Token);
        assert!(!again.federation);
        assert_eq!(again.element, ElementChoice::Path);
    }

    #[test]
    fn checks_name_the_field() {
        let mut answers = complete();
        answers.server_name = "bad name".into();
        answers.admin_password = "short".into();
        let errors = answers.check_all(false);
        assert!(errors.contains(&("server_name", "error.server_name")));
        assert!(errors.contains(&("admin_password", "error.password_too_short")));
        assert_eq!(server_name_host("example.org:8448"), "example.org");
    }
}
