//! `appliance config check`, config errors that name the key, and `--version`.
use crate::common;

use std::path::{Path, PathBuf};

use common::{appliance, assert_failure, assert_success, path_str, stderr, stdout};
use tempfile::TempDir;

fn write_config(yaml: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

fn check(path: &Path) -> std::process::Output {
    appliance(&["--config", path_str(path), "config", "check"], None)
}

const WITH_SECRETS: &str = "\
server_name: example.org
enable_registration: true
registration_requires_token: true
registration_shared_secret: sup3r-s3cret-shared-value
turn_uris: ['turn:turn.example.org?transport=udp']
turn_shared_secret: turn-s3cret-value
max_upload_size: 10M
";

#[test]
fn check_prints_the_effective_config_without_secrets() {
    let (_dir, path) = write_config(WITH_SECRETS);
    let output = check(&path);
    let printed = assert_success(&output);
    let everything = format!("{printed}{}", stderr(&output));
    assert!(
        !everything.contains("sup3r-s3cret-shared-value"),
        "{everything}"
    );
    assert!(!everything.contains("turn-s3cret-value"), "{everything}");

    let config: serde_yaml::Value = serde_yaml::from_str(&printed).expect("the output is YAML");
    assert_eq!(config["server_name"], "example.org");
    assert_eq!(config["registration_shared_secret"], "<redacted>");
    assert_eq!(config["turn_shared_secret"], "<redacted>");
    assert_eq!(config["max_upload_size"], "10M");
    assert_eq!(config["registration_requires_token"], true);
    // Defaults are filled in: the effective config, not the file.
    assert_eq!(config["enable_registration_without_verification"], false);
    assert_eq!(config["listeners"][0]["port"], 8008);
    assert!(
        config["rc_login"]["address"]["burst_count"].is_number(),
        "{printed}"
    );

    // What it prints is itself a valid config.
    let (_dir2, again) = write_config(&printed);
    assert_success(&check(&again));
}

#[test]
fn check_leaves_unset_secrets_unset() {
    let (_dir, path) = write_config("server_name: example.org\n");
    let printed = assert_success(&check(&path));
    let config: serde_yaml::Value = serde_yaml::from_str(&printed).expect("YAML");
    assert!(config["registration_shared_secret"].is_null(), "{printed}");
    assert!(!printed.contains("<redacted>"), "{printed}");
}

#[test]
fn an_empty_config_is_all_defaults() {
    let (_dir, path) = write_config("# nothing configured yet\n");
    let printed = assert_success(&check(&path));
    let config: serde_yaml::Value = serde_yaml::from_str(&printed).expect("YAML");
    assert_eq!(config["server_name"], "localhost");
    assert_eq!(config["enable_registration"], false);
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let (_dir, path) = write_config("server_name: example.org\n\nenable_registraton: true\n");
    let stderr = assert_failure(&check(&path));
    assert!(stderr.contains("enable_registraton"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains(path_str(&path)), "{stderr}");

    let (_dir, path) = write_config(
        "server_name: example.org\nrc_login:\n  adress: {per_second: 1, burst_count: 1}\n",
    );
    let stderr = assert_failure(&check(&path));
    assert!(stderr.contains("adress"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn a_mistyped_key_suggests_the_closest_known_one() {
    let (_dir, path) = write_config("server_name: example.org\nmax_uplod_size: 10M\n");
    let stderr = assert_failure(&check(&path));
    assert!(
        stderr.contains("did you mean `max_upload_size`?"),
        "{stderr}"
    );
    // In a nested section, the section's own keys.
    let (_dir, path) =
        write_config("server_name: example.org\nacme:\n  contact_emial: ops@example.org\n");
    let stderr = assert_failure(&check(&path));
    assert!(stderr.contains("did you mean `contact_email`?"), "{stderr}");
    let (_dir, path) =
        write_config("server_name: example.org\npassword_config:\n  policy: {minimum_lenght: 8}\n");
    let stderr = assert_failure(&check(&path));
    assert!(
        stderr.contains("did you mean `minimum_length`?"),
        "{stderr}"
    );
    // Nothing close: no guess.
    let (_dir, path) = write_config("server_name: example.org\nfavourite_colour: blue\n");
    let stderr = assert_failure(&check(&path));
    assert!(!stderr.contains("did you mean"), "{stderr}");
}

/// The files the config names must be there and readable; directories that do not exist yet
/// are only a warning (the server makes them), and so is Element without a release.
#[test]
fn check_reports_missing_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not checked here").unwrap();
    let yaml = format!(
        "server_name: example.org\ndata_dir: {data}\ntls_certificate_path: {cert}\n\
         tls_private_key_path: {key}\nelement: {{enabled: true}}\n",
        data = path_str(&dir.path().join("data")),
        cert = path_str(&dir.path().join("chian.pem")),
        key = path_str(&key),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let stderr = assert_failure(&check(&config));
    assert!(
        stderr.contains("`tls_certificate_path`") && stderr.contains("chian.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("`tls_private_key_path`"), "{stderr}");
    assert!(stderr.contains("warning: `data_dir`"), "{stderr}");
    assert!(stderr.contains("appliance element install"), "{stderr}");

    // A directory where a file belongs.
    std::fs::create_dir(dir.path().join("chian.pem")).unwrap();
    let stderr = assert_failure(&check(&config));
    assert!(stderr.contains("is not a file"), "{stderr}");
    std::fs::remove_dir(dir.path().join("chian.pem")).unwrap();
    std::fs::write(dir.path().join("chian.pem"), "chain").unwrap();
    let output = check(&config);
    assert_success(&output);
    assert!(common::stderr(&output).contains("valid"));
}

#[test]
fn invalid_values_name_their_key() {
    for (yaml, key) in [
        ("server_name: \"bad name\"\n", "server_name"),
        ("max_upload_size: lots\n", "max_upload_size"),
        ("log_level: loud\n", "log_level"),
        ("enable_registration: maybe\n", "enable_registration"),
        (
            "rc_registration: {per_second: 0, burst_count: 1}\n",
            "rc_registration",
        ),
        (
            "rc_login:\n  address: {per_second: 1, burst_count: 0}\n",
            "rc_login.address",
        ),
        ("public_baseurl: example.org\n", "public_baseurl"),
        ("turn_user_lifetime: forever\n", "turn_user_lifetime"),
        (
            "registration_shared_secret: ''\n",
            "registration_shared_secret",
        ),
        (
            "listeners:\n  - port: 8008\n    bind_addresses: ['not-an-ip']\n",
            "bind_addresses",
        ),
        // Open registration without any check is refused, as Synapse does.
        ("enable_registration: true\n", "enable_registration"),
    ] {
        let (_dir, path) = write_config(yaml);
        let output = check(&path);
        let stderr = assert_failure(&output);
        assert!(stderr.contains(key), "{yaml:?} should name {key}: {stderr}");
        assert!(stdout(&output).is_empty(), "nothing printed for {yaml:?}");
    }
}

#[test]
fn serve_refuses_an_invalid_config() {
    let (dir, path) = write_config("server_name: \"bad name\"\n");
    let data = dir.path().join("data");
    let output = appliance(
        &[
            "--config",
            path_str(&path),
            "--data-dir",
            path_str(&data),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        None,
    );
    let stderr = assert_failure(&output);
    assert!(stderr.contains("server_name"), "{stderr}");
}

#[test]
fn a_missing_config_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    for command in [&["config", "check"][..], &["admin", "list-users"]] {
        let mut args = vec!["--config", path_str(&missing)];
        args.extend_from_slice(command);
        let stderr = assert_failure(&appliance(&args, None));
        assert!(
            stderr.contains(path_str(&missing)) && stderr.contains("does not exist"),
            "{stderr}"
        );
    }
    // Nothing was created next to the missing file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A mistyped `--config` path on `serve` is an error naming the file, not the first-run wizard
/// (which on an installed box would open ports 80 and 8080 as root); `setup wizard` is the
/// explicit way to create a config at another path.
#[test]
fn serve_with_a_missing_config_file_is_an_error_not_the_wizard() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("confg.yaml");
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(common::BINARY)
        .args([
            "--config",
            path_str(&missing),
            "--data-dir",
            path_str(&data),
        ])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("APPLIANCE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run appliance");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "`serve` with a missing --config kept running (the wizard?):\n{}",
                stderr(&output)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let message = assert_failure(&output);
    assert!(
        message.contains(path_str(&missing))
            && message.contains("does not exist")
            && message.contains("setup wizard"),
        "{message}"
    );
    assert!(
        !data.join("setup-token").exists(),
        "no setup token was made"
    );
}

#[test]
fn the_config_can_come_from_the_environment() {
    let (_dir, path) = write_config("server_name: from-env.example\n");
    let output = std::process::Command::new(common::BINARY)
        .args(["config", "check"])
        .env("APPLIANCE_CONFIG", &path)
        .output()
        .expect("run appliance");
    let printed = assert_success(&output);
    assert!(printed.contains("from-env.example"), "{printed}");
}

#[test]
fn version_is_printed() {
    let output = appliance(&["--version"], None);
    let printed = assert_success(&output);
    assert_eq!(
        printed.trim(),
        format!("appliance {}", env!("CARGO_PKG_VERSION"))
    );
}
