//! The first-run wizard over HTTP: the setup token, CSRF, field errors, a failed apply, the
//! switch to serving, the command-line path, languages and `--reconfigure`.
use crate::common;
use crate::front_door_support;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use common::{TestServer, appliance, assert_failure, assert_success, path_str};
use reqwest::{StatusCode, header};

/// A cookie-keeping client that does not follow redirects, like a browser seen from the server.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
    language: Option<&'static str>,
}

struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: BTreeMap::new(),
            language: None,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request;
        if !self.cookies.is_empty() {
            let cookies: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header(header::COOKIE, cookies.join("; "));
        }
        if let Some(language) = self.language {
            request = request.header(header::ACCEPT_LANGUAGE, language);
        }
        let response = request.send().await.expect("request");
        for value in response.headers().get_all(header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Page {
            status: response.status(),
            location,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form with the CSRF field taken from the cookie.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        form.push((
            "csrf".into(),
            self.cookies.get("setup_csrf").cloned().unwrap_or_default(),
        ));
        let request = self.http.post(format!("{}{path}", self.base)).form(&form);
        self.send(request).await
    }

    /// Opens the token page and gets past it.
    async fn sign_in(&mut self, token: &str) {
        self.get("/setup/").await;
        let page = self.post("/setup/", &[("token", token)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location, "/setup/names");
    }

    /// Walks every step with `choices` (step -> fields); each must move on to the next.
    async fn walk(&mut self, choices: &[(&str, Vec<(&str, &str)>)]) {
        for (step, fields) in choices {
            let page = self.post(&format!("/setup/{step}"), fields).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{step}: {}", page.body);
        }
    }
}

fn setup_token(server: &TestServer) -> String {
    let output = appliance(
        &[
            "--config",
            path_str(&server.config_path),
            "--data-dir",
            path_str(&server.data_dir),
            "setup",
            "token",
        ],
        None,
    );
    assert_success(&output).trim().to_owned()
}

const PASSWORD: &str = "Correct-Horse-42";

/// The same choices as `cli_args`: self-signed, token registration, TURN, Element on its own
/// host, federation on.
fn browser_choices() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "names",
            vec![
                ("server_name", "example.org"),
                ("host", "matrix.example.org"),
            ],
        ),
        ("tls", vec![("tls", "self-signed")]),
        (
            "admin",
            vec![
                ("admin_user", "root"),
                ("admin_password", PASSWORD),
                ("admin_password_again", PASSWORD),
            ],
        ),
        ("registration", vec![("registration", "token")]),
        (
            "calls",
            vec![
                ("turn", "on"),
                ("turn_listen_port", "3478"),
                ("turn_min_port", "50000"),
                ("turn_max_port", "50100"),
                ("turn_external_ip", "203.0.113.7"),
            ],
        ),
        (
            "element",
            vec![("element", "host"), ("element_host", "chat.example.org")],
        ),
        ("federation", vec![("federation", "on")]),
    ]
}

fn cli_args(password_file: &str) -> Vec<&str> {
    vec![
        "setup",
        "--server-name",
        "example.org",
        "--host",
        "matrix.example.org",
        "--admin",
        "root",
        "--admin-password-file",
        password_file,
        "--tls",
        "self-signed",
        "--registration",
        "token",
        "--turn",
        "on",
        "--turn-min-port",
        "50000",
        "--turn-max-port",
        "50100",
        "--turn-external-ip",
        "203.0.113.7",
        "--element",
        "host",
        "--element-host",
        "chat.example.org",
        "--federation",
        "on",
    ]
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The config without what differs between two setups by design: generated secrets and the
/// data directory.
fn comparable(path: &Path) -> serde_yaml::Value {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let map = config.as_mapping_mut().unwrap();
    for key in [
        "registration_shared_secret",
        "turn_shared_secret",
        "data_dir",
    ] {
        let secret = map
            .remove(key)
            .unwrap_or_else(|| panic!("{key} is written"));
        assert!(secret.as_str().is_some_and(|s| s.len() >= 32) || key == "data_dir");
    }
    config
}

#[tokio::test]
async fn wrong_tokens_are_refused_and_slowed() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    assert_eq!(token.len(), 32, "128 bits in hex");
    assert_eq!(mode(&server.data_dir.join("setup-token")), 0o600);
    // Logged once, as a link to open (the line may follow the token file by a moment).
    let link = format!("/setup/?token={token}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log_text().contains(&link) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = server.log_text();
    assert_eq!(log.matches(&link).count(), 1, "{log}");

    let mut browser = Browser::new(&server.base_url);
    let first = browser.get("/setup/").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.contains("name=\"csrf\""));
    for _ in 0..3 {
        let page = browser
            .post("/setup/", &[("token", "00000000000000000000000000000000")])
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.body.contains("id=\"token-error\""), "{}", page.body);
        assert!(!browser.cookies.contains_key("setup_session"));
    }
    // After three wrong tries, the next answer waits a second.
    let started = Instant::now();
    let page = browser
        .get("/setup/?token=ffffffffffffffffffffffffffffffff")
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // Without the token, no step opens.
    let names = browser.get("/setup/names").await;
    assert_eq!(names.status, StatusCode::SEE_OTHER);
    assert_eq!(names.location, "/setup/");
    assert_eq!(
        browser.get("/_matrix/client/versions").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The link from the log works and takes the token out of the address bar.
    let page = browser.get(&format!("/setup/?token={token}")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, "/setup/names");
    assert!(browser.cookies.contains_key("setup_session"));
    assert_eq!(browser.get("/setup/names").await.status, StatusCode::OK);
}

/// A client that does not follow redirects, connecting from `source` (any 127.0.0.0/8 address
/// reaches the loopback listener), so the wizard sees different client addresses.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn wrong_guesses_never_delay_the_right_token() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let base = server.base_url.clone();
    // A dozen wrong guesses at once from one address.
    let guesser = client_from("127.0.0.1");
    let guesses: Vec<_> = (0..12)
        .map(|n| {
            let (http, url) = (guesser.clone(), format!("{base}/setup/?token={n:032x}"));
            tokio::spawn(async move {
                let started = Instant::now();
                let status = http.get(url).send().await.unwrap().status();
                (status, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The right token answers at once, from that address and from another; so does another
    // address's wrong guess.
    for (source, guess, expected) in [
        ("127.0.0.1", token.as_str(), StatusCode::SEE_OTHER),
        ("127.0.0.2", token.as_str(), StatusCode::SEE_OTHER),
        (
            "127.0.0.3",
            "0123456789abcdef0123456789abcdef",
            StatusCode::FORBIDDEN,
        ),
    ] {
        let started = Instant::now();
        let response = client_from(source)
            .get(format!("{base}/setup/?token={guess}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "from {source}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "from {source}: {:?}",
            started.elapsed()
        );
    }
    assert!(
        guesses.iter().any(|guess| !guess.is_finished()),
        "the right token was answered while wrong guesses still waited"
    );
    // The wrong guesses are all refused: the first few after growing delays, the rest at once
    // with 429 (the address's queue is full), none waiting long.
    let mut statuses = Vec::new();
    for guess in guesses {
        let (status, waited) = guess.await.unwrap();
        assert!(waited < Duration::from_secs(20), "{waited:?}");
        statuses.push(status);
    }
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::FORBIDDEN, StatusCode::TOO_MANY_REQUESTS].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::FORBIDDEN), "{statuses:?}");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.get("/setup/").await;
    // No csrf field at all.
    let request = browser
        .http
        .post(format!("{}/setup/", server.base_url))
        .form(&[("token", token.as_str())]);
    let page = browser.send(request).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!browser.cookies.contains_key("setup_session"));

    browser.sign_in(&token).await;
    // A field that does not match the cookie (a form posted from another site).
    let request = browser
        .http
        .post(format!("{}/setup/names", server.base_url))
        .form(&[
            ("server_name", "evil.example"),
            ("host", "evil.example"),
            ("csrf", "0123456789abcdef0123456789abcdef"),
        ]);
    let page = browser.send(request).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let names = browser.get("/setup/names").await;
    assert!(!names.body.contains("evil.example"), "nothing was stored");
    let apply = browser
        .http
        .post(format!("{}/setup/apply", server.base_url))
        .form(&[("csrf", "wrong")]);
    assert_eq!(browser.send(apply).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn invalid_answers_are_shown_beside_their_fields() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.sign_in(&token).await;

    let page = browser
        .post(
            "/setup/names",
            &[("server_name", "bad name!"), ("host", "matrix.example.org")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let field = page
        .body
        .split("id=\"server_name\"")
        .nth(1)
        .expect("the field");
    let error = field
        .split("id=\"server_name-error\">")
        .nth(1)
        .expect("its error");
    assert!(error.starts_with("Not a valid server name"), "{error}");
    assert!(
        field.contains("value=\"bad name!\""),
        "what was typed stays"
    );
    assert!(!page.body.contains("id=\"host-error\""));

    browser.walk(&browser_choices()[..2]).await;
    let page = browser
        .post(
            "/setup/admin",
            &[
                ("admin_user", "root"),
                ("admin_password", "tiny-pw"),
                ("admin_password_again", "tiny-pw"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = page
        .body
        .split("id=\"admin_password-error\">")
        .nth(1)
        .expect("password error");
    // The server's own policy (the wizard writes `minimum_length: 10`), in its words.
    assert!(
        error.starts_with("Too short") && error.contains("at least 10 characters"),
        "{error}"
    );
    assert!(
        !page.body.contains("tiny-pw"),
        "the password is not sent back"
    );

    // The same error in French when the browser asks for French.
    browser.language = Some("fr-FR,fr;q=0.9");
    let page = browser
        .post(
            "/setup/admin",
            &[
                ("admin_user", "root"),
                ("admin_password", PASSWORD),
                ("admin_password_again", "other"),
            ],
        )
        .await;
    let error = page
        .body
        .split("id=\"admin_password_again-error\">")
        .nth(1)
        .expect("mismatch error");
    assert!(
        error.starts_with("Les deux mots de passe diffèrent"),
        "{error}"
    );
}

/// `setup` without a browser does not propose Element either when no release is installed.
#[test]
fn the_command_line_setup_leaves_element_off_when_it_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let config = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    let printed = assert_success(&appliance(
        &[
            "--config",
            path_str(&config),
            "--data-dir",
            path_str(&data),
            "setup",
            "--server-name",
            "example.org",
            "--admin-password-file",
            path_str(&password_file),
            "--tls",
            "self-signed",
        ],
        None,
    ));
    let yaml = printed
        .split_once("\n\n")
        .and_then(|(_, rest)| rest.split("\nNothing was changed").next())
        .expect("the config it would write");
    let written: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(written["element"]["enabled"], false, "{printed}");
}

/// The delegation advice is one thing, shown alike on the names page and the finish page (a
/// server name with a port publishes its files on the host without the port), and the admin's
/// user name is normalised as registration does (`@Root:example.org:8448` is `root`).
#[tokio::test]
async fn the_delegation_advice_and_the_admin_name_are_the_same_everywhere() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.sign_in(&token).await;
    let mut choices = browser_choices();
    for (step, fields) in &mut choices {
        match *step {
            "names" => fields[0].1 = "example.org:8448",
            "admin" => fields[0].1 = "@Root:example.org:8448",
            _ => {}
        }
    }
    browser.walk(&choices).await;
    let pre_blocks = |body: &str| -> Vec<String> {
        body.split("<pre>")
            .skip(1)
            .filter_map(|rest| rest.split("</pre>").next())
            .map(str::to_owned)
            .collect()
    };
    let names = browser.get("/setup/names").await;
    assert!(
        names
            .body
            .contains("https://example.org/.well-known/matrix/server"),
        "{}",
        names.body
    );
    assert!(
        !names.body.contains("example.org:8448/.well-known"),
        "{}",
        names.body
    );
    let advice = pre_blocks(&names.body);
    assert_eq!(advice.len(), 2, "{}", names.body);
    let summary = browser.get("/setup/summary").await;
    assert!(
        summary.body.contains("@root:example.org:8448"),
        "{}",
        summary.body
    );
    let finish = browser.post("/setup/apply", &[]).await;
    assert_eq!(finish.status, StatusCode::OK, "{}", finish.body);
    assert_eq!(pre_blocks(&finish.body), advice, "{}", finish.body);
    let checklist = assert_success(&server.cli(&["setup", "checklist"], None));
    for json in &advice {
        assert!(
            checklist.contains(&json.replace("&#34;", "\"")),
            "{json} in {checklist}"
        );
    }
    assert_eq!(server.login("root", PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_apply_leaves_nothing_behind_and_can_be_retried() {
    // The config's directory is a file: nothing can be written there (this works as root too).
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("etc");
    std::fs::write(&blocked, "not a directory").unwrap();
    let config_path = blocked.join("config.yaml");
    let server = TestServer::start_setup(Some(config_path.clone()));
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.sign_in(&token).await;
    browser.walk(&browser_choices()).await;
    assert_eq!(browser.get("/setup/summary").await.status, StatusCode::OK);

    let page = browser.post("/setup/apply", &[]).await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(page.body.contains("nothing was changed"), "{}", page.body);
    assert!(
        page.body.contains("cannot write"),
        "says what to fix: {}",
        page.body
    );
    assert!(!config_path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
    // Still in setup mode, with the token still valid.
    assert_eq!(
        server.get("/_matrix/client/versions", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(setup_token(&server), token);

    // Fixed: the second apply works, so the first left no admin account behind.
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir(&blocked).unwrap();
    let page = browser.post("/setup/apply", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(mode(&config_path), 0o600);
    server.login_session("root", PASSWORD).await;
}

#[tokio::test]
async fn apply_switches_to_serving_and_the_cli_writes_the_same_config() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.sign_in(&token).await;
    browser.walk(&browser_choices()).await;
    let summary = browser.get("/setup/summary").await;
    assert!(
        summary.body.contains("@root:example.org"),
        "{}",
        summary.body
    );
    let finish = browser.post("/setup/apply", &[]).await;
    assert_eq!(finish.status, StatusCode::OK, "{}", finish.body);
    for expected in [
        "matrix.example.org",
        "chat.example.org",
        "8448",
        "3478",
        "50000-50100",
        "203.0.113.7",
    ] {
        assert!(
            finish.body.contains(expected),
            "{expected} in the checklist: {}",
            finish.body
        );
    }
    // Delegated, so the well-known files to publish are shown.
    assert!(
        finish
            .body
            .contains("https://example.org/.well-known/matrix/server")
    );
    let registration_token = finish
        .body
        .split("id=\"registration-token\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the first registration token")
        .to_owned();
    // It says what it is good for, and is so: 5 accounts, 7 days.
    let limits = finish
        .body
        .split("id=\"registration-token-limits\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the token's limits");
    assert!(
        limits.contains("up to 5 accounts") && limits.contains("in 7 days"),
        "{limits}"
    );
    let listed = assert_success(&server.cli(&["admin", "registration-token", "list"], None));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&registration_token))
        .expect("the token is listed");
    let columns: Vec<_> = row.split_whitespace().collect();
    assert_eq!(columns[1], "5", "{listed}");
    assert_ne!(columns.last(), Some(&"-"), "it expires: {listed}");
    // No Element release was installed: the finish page names none and says how to get one.
    assert!(
        finish.body.contains("id=\"element-missing\""),
        "{}",
        finish.body
    );
    assert!(finish.body.contains("appliance element install"));
    assert!(!finish.body.contains("href=\"https://chat.example.org/\""));

    // The same process, the same address: now a homeserver.
    let session = server.login_session("root", PASSWORD).await;
    let (status, whoami) = server.whoami(&session.access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], "@root:example.org");
    let (status, validity) = server
        .get(
            &format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={registration_token}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        validity["valid"], true,
        "the first registration token exists"
    );
    let gone = browser.get("/setup/").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "setup pages are gone");
    assert!(gone.body.contains("M_UNRECOGNIZED"));
    assert!(
        !server.data_dir.join("setup-token").exists(),
        "the token is void"
    );
    assert_failure(&server.cli(&["setup", "token"], None));

    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&server.config_path).unwrap()).unwrap();
    assert_eq!(config["server_name"], "example.org");
    assert_eq!(config["public_baseurl"], "https://matrix.example.org/");
    assert_eq!(config["registration_requires_token"], true);
    assert_eq!(config["turn_relay_enabled"], true);
    assert_eq!(config["element"]["host"], "chat.example.org");
    let ports: Vec<_> = config["listeners"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| (l["port"].as_u64().unwrap(), l["tls"].as_bool().unwrap()))
        .collect();
    assert_eq!(ports, [(80, false), (443, true), (8448, true)]);
    assert_eq!(mode(&server.config_path), 0o600);
    let checklist = assert_success(&server.cli(&["setup", "checklist"], None));
    assert!(
        checklist.contains("50000-50100") && checklist.contains("chat.example.org"),
        "{checklist}"
    );

    // The command line, with the same choices.
    let cli_dir = tempfile::tempdir().unwrap();
    let cli_config = cli_dir.path().join("config.yaml");
    let password_file = cli_dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let cli_data = cli_dir.path().join("data");
    let mut args = vec![
        "--config",
        path_str(&cli_config),
        "--data-dir",
        path_str(&cli_data),
    ];
    args.extend(cli_args(path_str(&password_file)));
    let dry_run = assert_success(&appliance(&args, None));
    assert!(dry_run.contains("--yes"), "{dry_run}");
    assert!(!cli_config.exists(), "nothing written without --yes");
    args.push("--yes");
    let printed = assert_success(&appliance(&args, None));
    assert!(
        printed.contains("50000-50100"),
        "the checklist is printed: {printed}"
    );
    assert!(
        printed.contains("up to 5 accounts") && printed.contains("in 7 days"),
        "the first token's limits: {printed}"
    );
    assert_eq!(mode(&cli_config), 0o600);
    assert_eq!(comparable(&cli_config), comparable(&server.config_path));
    // A second run refuses to overwrite the config.
    let again = assert_failure(&appliance(&args, None));
    assert!(again.contains("--reconfigure"), "{again}");
}

/// Browsers ask every page for /favicon.ico: a quiet 404, and no error line in the log.
#[tokio::test]
async fn a_missing_favicon_is_a_quiet_404() {
    let server = TestServer::start_setup(None);
    let mut browser = Browser::new(&server.base_url);
    let page = browser.get("/favicon.ico").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    // A client that comes too early gets 503, which is no error of the server either.
    let early = browser.get("/_matrix/client/versions").await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    assert!(!log.contains("ERROR"), "{log}");
}

/// The element step does not propose Element when no release is installed, and says how to
/// install one.
#[tokio::test]
async fn element_is_not_proposed_when_it_is_not_installed() {
    let server = TestServer::start_setup(None);
    let token = setup_token(&server);
    let mut browser = Browser::new(&server.base_url);
    browser.sign_in(&token).await;
    let page = browser.get("/setup/element").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("appliance element install"),
        "{}",
        page.body
    );
    let checked: Vec<_> = page
        .body
        .split("<input")
        .filter_map(|input| input.split('>').next())
        .filter(|tag| tag.contains("name=\"element\"") && tag.contains("checked"))
        .collect();
    assert_eq!(checked.len(), 1, "{}", page.body);
    assert!(checked[0].contains("value=\"off\""), "{}", checked[0]);
}

#[tokio::test]
async fn every_language_is_chosen_from_the_browser_or_the_switcher() {
    let server = TestServer::start_setup(None);
    for (accept, lang, text) in [
        ("fr-CA,fr;q=0.9", "fr", "Jeton d&#x27;installation"),
        ("ru", "ru", "Токен настройки"),
        ("zh-CN,zh;q=0.8", "zh", "安装令牌"),
        ("de-DE", "en", "Setup token"),
    ] {
        let mut browser = Browser::new(&server.base_url);
        browser.language = Some(accept);
        let page = browser.get("/setup/").await;
        assert!(
            page.body.contains(&format!("<html lang=\"{lang}\">")),
            "{accept}"
        );
        let text = text.replace("&#x27;", "'");
        let body = page.body.replace("&#x27;", "'").replace("&#39;", "'");
        assert!(body.contains(&text), "{accept}: {text} in {}", page.body);
    }
    // The switcher wins over Accept-Language and is remembered.
    let mut browser = Browser::new(&server.base_url);
    browser.language = Some("en");
    let page = browser.get("/setup/?lang=ru").await;
    assert!(page.body.contains("<html lang=\"ru\">"));
    let page = browser.get("/setup/").await;
    assert!(page.body.contains("<html lang=\"ru\">"));
}

#[tokio::test]
async fn reconfigure_reopens_the_wizard_prefilled_and_keeps_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let mut args = vec!["--config", path_str(&config), "--data-dir", path_str(&data)];
    args.extend(cli_args(path_str(&password_file)));
    args.push("--yes");
    assert_success(&appliance(&args, None));

    let mut child = std::process::Command::new(common::BINARY)
        .args(["--config", path_str(&config), "--data-dir", path_str(&data)])
        .args(["setup", "--reconfigure", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.split("open http://").nth(1) {
                let _ = tx.send(url.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the wizard's link");
    let (address, query) = url.split_once("/setup/").unwrap();
    let mut browser = Browser::new(&format!("http://{address}"));
    let page = browser.get(&format!("/setup/{query}")).await;
    assert_eq!(page.location, "/setup/names", "a new token works");
    let names = browser.get("/setup/names").await;
    assert!(
        names.body.contains("value=\"example.org\" readonly"),
        "{}",
        names.body
    );
    assert!(
        names.body.contains("value=\"matrix.example.org\""),
        "pre-filled"
    );
    // A changed server name is ignored; the rest changes.
    browser
        .walk(&[
            (
                "names",
                vec![("server_name", "other.org"), ("host", "hs.example.org")],
            ),
            ("federation", vec![("federation", "off")]),
        ])
        .await;
    let page = browser.post("/setup/apply", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("systemctl restart"));
    assert!(
        child.wait().unwrap().success(),
        "the wizard ends after apply"
    );
    let written: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(written["server_name"], "example.org");
    assert_eq!(written["public_baseurl"], "https://hs.example.org/");
    assert_eq!(
        written["listeners"].as_sequence().unwrap().len(),
        2,
        "no federation listener"
    );
    assert_eq!(
        written["element"]["host"], "chat.example.org",
        "unchanged answers stay"
    );
}

/// `serve` with nothing installed in `cwd` (what `cargo run --release` does), and its log line
/// with the setup link.
fn start_development_server(cwd: &std::path::Path) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(common::BINARY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env_remove("APPLIANCE_CONFIG")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the setup line");
        if line.contains("/setup/?token=") {
            break line;
        }
    };
    (child, line)
}
#[test]
fn without_any_config_the_wizard_starts_in_the_working_directory() {
    // What `cargo run --release` does on a machine with nothing installed: the wizard, with its
    // data (and later its config) in ./appliance-data.
    let cwd = tempfile::tempdir().unwrap();
    let (mut child, line) = start_development_server(cwd.path());
    assert!(line.contains("appliance-data/config.yaml"), "{line}");
    let data = cwd.path().join("appliance-data");
    let token = std::fs::read_to_string(data.join("setup-token")).unwrap();
    let output = std::process::Command::new(common::BINARY)
        .args(["setup", "token"])
        .current_dir(cwd.path())
        .env_remove("APPLIANCE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(assert_success(&output).trim(), token.trim());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!data.join("config.yaml").exists());
}

/// After the wizard of a development server (`cargo run`: nothing installed, no --config), the
/// finish page, the well-known answers, the config and the checklist describe what it really
/// serves: plain HTTP on its one address, no DNS records or router ports, Element only if
/// installed, and the TURN relay as it really runs (this process started it).
#[tokio::test]
async fn a_development_server_describes_what_it_really_serves() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut child, line) = start_development_server(cwd.path());
    let link = line
        .split("open ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let (base, token) = link.split_once("/setup/?token=").unwrap();
    let base = base.to_owned();
    // A free port for the relay, so that it really starts whatever else runs.
    let turn_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut choices = browser_choices();
    for (step, fields) in &mut choices {
        match *step {
            "calls" => {
                *fields = vec![
                    ("turn", "on"),
                    ("turn_listen_port", turn_port.as_str()),
                    ("turn_min_port", "50200"),
                    ("turn_max_port", "50300"),
                    ("turn_external_ip", "203.0.113.7"),
                ]
            }
            "element" => *fields = vec![("element", "path")],
            _ => {}
        }
    }
    let mut browser = Browser::new(&base);
    browser.sign_in(token).await;
    browser.walk(&choices).await;
    let finish = browser.post("/setup/apply", &[]).await;
    assert_eq!(finish.status, StatusCode::OK, "{}", finish.body);
    let served = format!("{base}/");
    assert!(
        finish.body.contains("id=\"development\"") && finish.body.contains(&served),
        "{}",
        finish.body
    );
    for installed_box in [
        "DNS records to create",
        "Ports to forward",
        "8448",
        "https://",
    ] {
        assert!(
            !finish.body.contains(installed_box),
            "{installed_box} on a development server's finish page: {}",
            finish.body
        );
    }
    assert!(
        finish.body.contains("id=\"element-missing\""),
        "{}",
        finish.body
    );
    let turn = finish
        .body
        .split("id=\"turn-state\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the relay's state");
    assert!(
        turn.contains("running") && turn.contains(&turn_port),
        "{turn}"
    );
    assert!(!turn.contains("not running"), "{turn}");
    assert!(
        std::net::UdpSocket::bind(format!("0.0.0.0:{turn_port}")).is_err(),
        "the relay holds its port"
    );

    let client: serde_json::Value = reqwest::get(format!("{base}/.well-known/matrix/client"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(client["m.homeserver"]["base_url"], base.as_str());
    // No TLS, so no federation to announce (not the installed box's port 8448 or 443).
    let server = reqwest::get(format!("{base}/.well-known/matrix/server"))
        .await
        .unwrap();
    assert_eq!(server.status(), StatusCode::NOT_FOUND);
    let config: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(cwd.path().join("appliance-data/config.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["public_baseurl"], served.as_str());
    assert!(config["element"]["host"].is_null(), "{config:?}");
    assert_ne!(config["acme"]["enabled"], true);

    let checklist = std::process::Command::new(common::BINARY)
        .args(["setup", "checklist"])
        .current_dir(cwd.path())
        .env_remove("APPLIANCE_CONFIG")
        .output()
        .unwrap();
    let checklist = assert_success(&checklist);
    assert!(
        checklist.contains("development server") && checklist.contains(&served),
        "{checklist}"
    );
    assert!(!checklist.contains("DNS records"), "{checklist}");
    assert!(
        checklist.contains("TURN relay for calls: running"),
        "{checklist}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `appliance setup checklist` says when the data directory's disk is full: a 16 MiB tmpfs in a
/// mount namespace of its own, filled up.
#[test]
#[ignore = "needs root (a mount namespace of its own); tests/run.sh runs it as root"]
fn the_checklist_says_when_the_data_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: example.org\ndata_dir: {}\n",
            path_str(&mount.join("data"))
        ),
    )
    .unwrap();
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=16m tmpfs \"$1\" && \
             dd if=/dev/zero of=\"$1/filler\" bs=1M count=15 2>/dev/null; \
             exec \"$2\" --config \"$3\" setup checklist",
        )
        .args(["sh", path_str(&mount), common::BINARY, path_str(&config)])
        .env_remove("APPLIANCE_CONFIG")
        .output()
        .expect("unshare (util-linux)");
    let text = assert_success(&output);
    assert!(
        text.contains("is full") && text.contains(path_str(&mount.join("data"))),
        "{text}"
    );
}

/// Starts the wizard with no config and no `--listen`, as the package's unit does (it runs
/// `serve` with the packaged path; any other path needs `setup wizard`), in a
/// network namespace of its own (loopback only), so that the installed box's fixed ports (80,
/// 8080, then 443 and 8448) are free whatever else runs. Needs root, as CI has.
fn start_installed_box(config_path: &Path, data_dir: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(front_door_support::BINARY)
        .args([
            "--config",
            path_str(config_path),
            "--data-dir",
            path_str(data_dir),
        ])
        .args(["setup", "wizard"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let stderr = child.stderr.take().unwrap();
    let (token_tx, token_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("?token=").nth(1) {
                let token: String = rest
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                let _ = token_tx.send(Ok(token));
            }
            log.push_str(&line);
            log.push('\n');
        }
        let _ = token_tx.send(Err(log));
    });
    match token_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(token)) => (child, token),
        Ok(Err(log)) => panic!(
            "the installed box stopped before setup mode (needs root for its network namespace):\n{log}"
        ),
        Err(_) => panic!("no setup token logged within 30 s"),
    }
}

/// Runs `work` on a thread inside the network namespace of process `pid`, with a tokio runtime
/// of that thread only, so that every socket it opens is in that namespace.
fn in_network_namespace_of<T: Send + 'static>(
    pid: u32,
    work: impl AsyncFnOnce() -> T + Send + 'static,
) -> T {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        // SAFETY: setns only changes this thread's network namespace; the descriptor is open.
        let joined = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
    .join()
    .unwrap()
}

/// An installed box: the wizard on ports 80 and 8080; applying it (self-signed TLS, federation
/// on) closes those and the same process, without a restart, serves the config's listeners:
/// 80 redirecting to https, 443 with the certificate it made, 8448 for federation.
#[test]
#[ignore = "needs root (a network namespace of its own); tests/run.sh runs it as root"]
fn an_installed_box_hands_over_from_the_wizard_to_its_own_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    let data_dir = dir.path().join("data");
    let (mut child, token) = start_installed_box(&config_path, &data_dir);
    let pid = child.id();
    let tls_file = data_dir.join("tls/self-signed.pem");
    in_network_namespace_of(pid, async move || {
        for wizard in ["http://127.0.0.1:80", "http://127.0.0.1:8080"] {
            let page = Browser::new(wizard).get("/setup/").await;
            assert_eq!(page.status, StatusCode::OK, "the wizard on {wizard}");
        }
        let mut browser = Browser::new("http://127.0.0.1:80");
        browser.sign_in(&token).await;
        browser.walk(&browser_choices()).await;
        let finish = browser.post("/setup/apply", &[]).await;
        assert_eq!(finish.status, StatusCode::OK, "{}", finish.body);

        // The homeserver's own listeners come up in the same process.
        let deadline = Instant::now() + Duration::from_secs(30);
        let roots = loop {
            if let Ok(pem) = std::fs::read_to_string(&tls_file)
                && tokio::net::TcpStream::connect("127.0.0.1:443")
                    .await
                    .is_ok()
            {
                break front_door_support::roots_from_pem(&pem);
            }
            assert!(Instant::now() < deadline, "nothing on port 443 after apply");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let host = "matrix.example.org";
        let versions =
            front_door_support::https_get(443, host, &roots, "/_matrix/client/versions", &[]).await;
        assert_eq!(versions.status, 200);
        assert!(versions.json()["versions"].is_array());
        let login = front_door_support::https_post_json(
            443,
            host,
            &roots,
            "/_matrix/client/v3/login",
            &serde_json::json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "root"},
                "password": PASSWORD,
            }),
        )
        .await;
        assert_eq!(login.status, 200, "{:?}", login.json());
        assert_eq!(login.json()["user_id"], "@root:example.org");
        let setup = front_door_support::https_get(443, host, &roots, "/setup/", &[]).await;
        assert_eq!(setup.status, 404, "the wizard is gone");

        let federation =
            front_door_support::https_get(8448, host, &roots, "/_matrix/key/v2/server", &[]).await;
        assert_eq!(federation.status, 200);
        assert_eq!(federation.json()["server_name"], "example.org");

        let redirect = front_door_support::http_get(80, host, "/_matrix/client/versions").await;
        assert_eq!(redirect.status, 308);
        assert_eq!(
            redirect.header("location"),
            "https://matrix.example.org/_matrix/client/versions"
        );
        assert!(
            tokio::net::TcpStream::connect("127.0.0.1:8080")
                .await
                .is_err(),
            "the wizard's second port is closed"
        );
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the same process serves: it was not restarted"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
