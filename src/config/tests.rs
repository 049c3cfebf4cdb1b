use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.yaml"))
}

#[test]
fn an_empty_file_is_all_defaults() {
    let config = parse("# nothing here\n").unwrap();
    assert_eq!(config.server_name, "localhost");
    assert_eq!(config.listeners[0].port, 8008);
}

#[test]
fn a_partial_file_keeps_other_defaults() {
    let config =
        parse("server_name: example.org\nrc_login:\n  address: {per_second: 1, burst_count: 2}\n")
            .unwrap();
    assert_eq!(config.server_name, "example.org");
    assert_eq!(config.rc_login.address.burst_count, 2.0);
    assert_eq!(config.rc_login.account, LoginRateLimits::default().account);
    assert_eq!(config.max_upload_size, ByteSize::mebibytes(50));
}

#[test]
fn synapse_rate_limits_have_synapse_defaults() {
    let config = parse("server_name: example.org\n").unwrap();
    let limit = |per_second, burst_count| RateLimit {
        per_second,
        burst_count,
    };
    // synapse/config/ratelimiting.py
    assert_eq!(config.rc_message, limit(0.2, 10.0));
    assert_eq!(
        config.rc_admin_redaction, None,
        "rc_message applies unless set"
    );
    assert_eq!(config.rc_joins.local, limit(0.1, 10.0));
    assert_eq!(config.rc_joins.remote, limit(0.01, 10.0));
    assert_eq!(config.rc_invites.per_room, limit(0.3, 10.0));
    assert_eq!(config.rc_invites.per_user, limit(0.003, 5.0));
    assert_eq!(config.rc_invites.per_issuer, limit(0.3, 10.0));
    assert_eq!(config.rc_room_creation, limit(0.016, 10.0));
    assert_eq!(config.rc_media_create, limit(10.0, 50.0));
    assert_eq!(config.rc_delayed_event_mgmt, limit(1.0, 5.0));
}

#[test]
fn synapse_rate_limit_keys_are_read() {
    let config = parse(
        "rc_message: {per_second: 0.5, burst_count: 15}
rc_admin_redaction:
  per_second: 1
  burst_count: 50
rc_joins:
  local: {per_second: 0.2, burst_count: 15}
  remote: {per_second: 0.03, burst_count: 12}
rc_invites:
  per_room: {per_second: 0.5, burst_count: 5}
  per_user: {per_second: 0.004, burst_count: 3}
  per_issuer: {per_second: 0.6, burst_count: 4}
rc_media_create: {per_second: 2, burst_count: 7}
rc_room_creation: {per_second: 0.5, burst_count: 2}
rc_delayed_event_mgmt: {per_second: 3, burst_count: 9}
",
    )
    .unwrap();
    assert_eq!(config.rc_message.burst_count, 15.0);
    assert_eq!(config.rc_admin_redaction.unwrap().burst_count, 50.0);
    assert_eq!(config.rc_joins.local.per_second, 0.2);
    assert_eq!(config.rc_joins.remote.burst_count, 12.0);
    assert_eq!(config.rc_invites.per_room.burst_count, 5.0);
    assert_eq!(config.rc_invites.per_user.per_second, 0.004);
    assert_eq!(config.rc_invites.per_issuer.burst_count, 4.0);
    assert_eq!(config.rc_media_create.burst_count, 7.0);
    assert_eq!(config.rc_room_creation.burst_count, 2.0);
    assert_eq!(config.rc_delayed_event_mgmt.per_second, 3.0);
    // One sub-key given, the other keeps Synapse's default.
    let config = parse("rc_invites:\n  per_user: {per_second: 1, burst_count: 2}\n").unwrap();
    assert_eq!(
        config.rc_invites.per_room,
        InviteRateLimits::default().per_room
    );
}

#[test]
fn rate_limit_keys_are_checked_by_name() {
    for (yaml, key) in [
        (
            "rc_message: {per_second: 0, burst_count: 10}\n",
            "rc_message",
        ),
        (
            "rc_admin_redaction: {per_second: 1, burst_count: 0}\n",
            "rc_admin_redaction",
        ),
        (
            "rc_joins:\n  remote: {per_second: -1, burst_count: 10}\n",
            "rc_joins.remote",
        ),
        (
            "rc_invites:\n  per_issuer: {per_second: .inf, burst_count: 10}\n",
            "rc_invites.per_issuer",
        ),
        (
            "rc_media_create: {per_second: 1, burst_count: 0.5}\n",
            "rc_media_create",
        ),
    ] {
        let err = parse(yaml).unwrap_err().to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
    // Misspelt sub-keys are refused like any unknown key.
    let err = parse("rc_invites:\n  per_inviter: {per_second: 1, burst_count: 2}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_inviter"), "{err}");
    let err = parse("rc_messages: {per_second: 1, burst_count: 2}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rc_messages"), "{err}");
}

#[test]
fn a_server_name_may_carry_a_port() {
    assert_eq!(
        parse("server_name: localhost:8448").unwrap().server_name,
        "localhost:8448"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let err = parse("server_name: example.org\nenable_registraton: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("enable_registraton"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn invalid_values_name_the_key() {
    let err = parse("server_name: 'not a name'\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server_name"), "{err}");
    let err = parse("max_upload_size: lots\n").unwrap_err().to_string();
    assert!(err.contains("max_upload_size"), "{err}");
}

#[test]
fn open_registration_needs_an_explicit_choice() {
    let err = parse("enable_registration: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("enable_registration"), "{err}");
    parse("enable_registration: true\nregistration_requires_token: true\n").unwrap();
    parse("enable_registration: true\nenable_registration_without_verification: true\n").unwrap();
}

#[test]
fn secrets_are_redacted_when_printed() {
    let config =
        parse("registration_shared_secret: hunter2\nturn_shared_secret: s3cret\n").unwrap();
    let shown = config.to_redacted_yaml();
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
}

#[test]
fn an_installed_box_config_parses() {
    let config = parse(
        "server_name: example.org\n\
         public_baseurl: https://matrix.example.org/\n\
         listeners:\n\
         \x20 - {port: 80, bind_addresses: ['::'], type: http, tls: false, resources: [{names: [acme, redirect]}]}\n\
         \x20 - {port: 443, bind_addresses: ['::'], type: http, tls: true, resources: [{names: [client]}]}\n\
         \x20 - {port: 8448, bind_addresses: ['::'], type: http, tls: true, resources: [{names: [federation]}]}\n\
         acme: {enabled: true, accept_terms_of_service: true, contact_email: admin@example.org, challenge: tls-alpn-01}\n\
         serve_server_wellknown: true\n\
         extra_well_known_client_content: {io.element.e2ee: {default: true}}\n\
         element: {enabled: true, host: element.example.org}\n\
         turn_relay_enabled: true\n\
         turn_external_ip: 203.0.113.7\n",
    )
    .unwrap();
    assert!(config.listeners[1].tls);
    assert_eq!(config.acme.challenge, AcmeChallenge::TlsAlpn01);
    assert!(
        config
            .extra_well_known_client_content
            .contains_key("io.element.e2ee")
    );
    assert_eq!(config.element.host.as_deref(), Some("element.example.org"));
    assert_eq!(
        config.turn_external_ip,
        Some("203.0.113.7".parse().unwrap())
    );
}

#[test]
fn acme_needs_the_terms_accepted_and_excludes_certificate_files() {
    let err = parse("acme: {enabled: true}\n").unwrap_err().to_string();
    assert!(err.contains("acme.accept_terms_of_service"), "{err}");
    let err = parse(
        "acme: {enabled: true, accept_terms_of_service: true}\n\
         tls_certificate_path: /a.pem\ntls_private_key_path: /a.key\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("acme.enabled"), "{err}");
    let err = parse("tls_certificate_path: /a.pem\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_certificate_path"), "{err}");
}

#[test]
fn a_turn_port_range_must_not_be_reversed() {
    let err = parse("turn_min_port: 50000\nturn_max_port: 49000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("turn_min_port"), "{err}");
}

#[test]
fn trusted_proxies_and_client_timeouts_are_checked() {
    let listener = "listeners:\n  - port: 8008\n    x_forwarded: true\n    trusted_proxies: ";
    let config = parse(&format!(
        "{listener}['10.0.0.1', '192.168.0.0/16', '::1']\n"
    ))
    .unwrap();
    assert_eq!(config.listeners[0].trusted_proxies.len(), 3);
    let error = parse(&format!("{listener}['proxy.example']\n")).unwrap_err();
    assert!(error.to_string().contains("trusted_proxies"), "{error}");
    assert_eq!(
        parse("").unwrap().listeners[0].trusted_proxies,
        ["127.0.0.0/8", "::1/128"]
    );
    let error = parse("client_body_timeout: 0s\n").unwrap_err();
    assert!(error.to_string().contains("client_body_timeout"), "{error}");
    let config = parse("client_header_timeout: 5s\n").unwrap();
    assert_eq!(config.client_header_timeout.0.as_secs(), 5);
    for key in [
        "client_body_deadline: 0s",
        "client_upload_deadline: 0s",
        "client_max_connections: 0",
        "client_max_connections_per_address: 0",
    ] {
        let error = parse(&format!("{key}\n")).unwrap_err().to_string();
        let name = key.split(':').next().unwrap();
        assert!(error.contains(name), "{key}: {error}");
    }
    let config = parse("").unwrap();
    assert_eq!(config.client_body_deadline.0.as_secs(), 60);
    assert_eq!(config.client_max_connections_per_address, 64);
}

#[test]
fn outbound_federation_keys_have_synapse_defaults_and_are_checked() {
    let config = parse("server_name: example.org\n").unwrap();
    assert_eq!(config.ip_range_blacklist, None, "Synapse's default list");
    assert!(config.federation_verify_certificates);
    assert_eq!(config.federation_domain_whitelist, None, "every server");
    parse("ip_range_blacklist: []\nip_range_whitelist: ['127.0.0.1', '::1/128']\n").unwrap();
    parse("federation_domain_whitelist: ['matrix.org', 'example.com:8448']\n").unwrap();
    for bad in [
        "ip_range_blacklist: ['10.0.0.0/33']\n",
        "ip_range_whitelist: ['localhost']\n",
        "federation_domain_whitelist: ['not a name']\n",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn federation_backoff_keys_are_synapses_with_its_defaults() {
    let config = parse("server_name: example.org\n").unwrap();
    assert_eq!(
        config.federation.destination_min_retry_interval.0.as_secs(),
        600
    );
    assert_eq!(config.federation.destination_retry_multiplier, 2.0);
    assert_eq!(
        config.federation.destination_max_retry_interval.0.as_secs(),
        7 * 86_400
    );
    assert_eq!(config.federation.client_timeout.0.as_secs(), 60);
    let config = parse(
        "federation:\n  destination_min_retry_interval: 30s\n  destination_retry_multiplier: 3\n  \
         client_timeout: 20s\n",
    )
    .unwrap();
    assert_eq!(config.federation.client_timeout.0.as_secs(), 20);
    assert_eq!(
        config.federation.destination_min_retry_interval.0.as_secs(),
        30
    );
    assert_eq!(config.federation.destination_retry_multiplier, 3.0);
    for bad in [
        "federation:\n  destination_retry_multiplier: 0.5\n",
        "federation:\n  destination_min_retry_interval: 0s\n",
        "federation:\n  client_timeout: 0s\n",
        "federation:\n  destination_min_retry_interval: 2h\n  destination_max_retry_interval: 1h\n",
        "federation:\n  destination_retry_interval: 1h\n",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn max_event_delay_duration_is_synapses_key() {
    // Unset (Synapse's default): delayed events are off.
    assert_eq!(parse("").unwrap().max_event_delay_duration, None);
    let config = parse("max_event_delay_duration: 24h\n").unwrap();
    assert_eq!(
        config.max_event_delay_duration.unwrap().0,
        std::time::Duration::from_secs(86_400)
    );
    let config = parse("max_event_delay_duration: 1500\n").unwrap();
    assert_eq!(
        config.max_event_delay_duration.unwrap().0,
        std::time::Duration::from_millis(1500)
    );
    let err = parse("max_event_delay_duration: 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_event_delay_duration"), "{err}");
}
