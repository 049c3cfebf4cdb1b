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
