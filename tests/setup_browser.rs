//! The wizard in a real browser: headless Chromium, driven through chromedriver (WebDriver) with
//! fantoccini, walks every step with a self-signed certificate, then the config file, a login
//! as the new admin and the closed setup pages are checked. A screenshot of every step is kept
//! in `target/setup-screenshots/`.
use crate::common;

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::TestServer;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

const PASSWORD: &str = "Browser-Setup-2026";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian chromium-driver; .ci/run installs it)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    }
}

async fn open_browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1000,1400", "--lang=en-US",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/setup-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

async fn fill(browser: &Client, id: &str, text: &str) {
    let field = browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|_| panic!("field {id}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn choose(browser: &Client, name: &str, value: &str) {
    browser
        .find(Locator::Css(&format!(
            "input[name=\"{name}\"][value=\"{value}\"]"
        )))
        .await
        .unwrap_or_else(|_| panic!("option {name}={value}"))
        .click()
        .await
        .unwrap();
}

/// Clicks the step's main button and waits for the next page.
async fn next(browser: &Client, expected_path: &str) {
    browser
        .find(Locator::Css(".buttons button[type=submit]"))
        .await
        .expect("the Continue button")
        .click()
        .await
        .unwrap();
    wait_for_path(browser, expected_path).await;
}

async fn wait_for_path(browser: &Client, expected_path: &str) {
    let started = Instant::now();
    loop {
        let url = browser.current_url().await.unwrap();
        if url.path() == expected_path {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still at {url}, expected {expected_path}: {}",
            browser.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A text of the wizard's catalogue for `lang` (assets/i18n/<lang>.yaml).
fn catalogue_text(lang: &str, key: &str) -> String {
    let path = format!("{}/assets/i18n/{lang}.yaml", env!("CARGO_MANIFEST_DIR"));
    let catalogue: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    catalogue[key].as_str().unwrap().to_owned()
}

async fn heading(browser: &Client) -> String {
    browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_browser_walks_the_wizard_and_the_server_runs() {
    let server = TestServer::start_setup(None);
    let token = std::fs::read_to_string(server.data_dir.join("setup-token")).unwrap();
    let driver = start_chromedriver();
    let browser = open_browser(&driver).await;
    let base = server.base_url.clone();

    // 1. The token.
    browser.goto(&format!("{base}/")).await.unwrap();
    wait_for_path(&browser, "/setup/").await;
    assert_eq!(heading(&browser).await, "Setup token");
    screenshot(&browser, "01-token").await;
    // The language switcher: each language's page, screenshotted so that a person can see its
    // script rendered (CI installs fonts for Cyrillic and Chinese), then back to English.
    for lang in ["fr", "ru", "zh", "en"] {
        browser
            .find(Locator::Css(&format!("nav.languages a[hreflang={lang}]")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(heading(&browser).await, catalogue_text(lang, "token.title"));
        if lang != "en" {
            screenshot(&browser, &format!("01-token-{lang}")).await;
        }
    }
    fill(&browser, "token", token.trim()).await;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&browser, "/setup/names").await;

    // 2. Names, first with a mistake shown beside its field.
    fill(&browser, "server_name", "not a name").await;
    fill(&browser, "host", "matrix.example.org").await;
    next(&browser, "/setup/names").await;
    // The page answering the mistake has the same path as the form: wait for its error rather
    // than for a path that is already there.
    let error = browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("server_name-error"))
        .await
        .expect("the error");
    assert!(
        error
            .text()
            .await
            .unwrap()
            .starts_with("Not a valid server name")
    );
    screenshot(&browser, "02-names-error").await;
    fill(&browser, "server_name", "example.org").await;
    // The same page on a phone.
    browser.set_window_size(390, 1100).await.unwrap();
    screenshot(&browser, "02-names-phone").await;
    browser.set_window_size(1000, 1400).await.unwrap();
    next(&browser, "/setup/tls").await;

    // 3. TLS: self-signed.
    screenshot(&browser, "03-tls").await;
    choose(&browser, "tls", "self-signed").await;
    next(&browser, "/setup/admin").await;

    // 4. The first admin.
    fill(&browser, "admin_user", "boss").await;
    fill(&browser, "admin_password", PASSWORD).await;
    fill(&browser, "admin_password_again", PASSWORD).await;
    screenshot(&browser, "04-admin").await;
    next(&browser, "/setup/registration").await;

    // 5. Registration by invite tokens.
    choose(&browser, "registration", "token").await;
    screenshot(&browser, "05-registration").await;
    next(&browser, "/setup/calls").await;

    // 6. Calls: the built-in relay with a fixed public address.
    fill(&browser, "turn_external_ip", "198.51.100.20").await;
    screenshot(&browser, "06-calls").await;
    next(&browser, "/setup/element").await;

    // 7. Element on its own host (chosen: with no release installed, "off" is proposed).
    choose(&browser, "element", "host").await;
    screenshot(&browser, "07-element").await;
    next(&browser, "/setup/federation").await;

    // 8. Federation on.
    screenshot(&browser, "08-federation").await;
    next(&browser, "/setup/summary").await;

    // 9. Summary, then apply.
    let summary = browser
        .find(Locator::Css("dl.summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.contains("@boss:example.org"), "{summary}");
    assert!(summary.contains("Self-signed"), "{summary}");
    screenshot(&browser, "09-summary").await;
    browser
        .find(Locator::Id("apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&browser, "/setup/apply").await;
    assert_eq!(heading(&browser).await, "Your server is running");
    let finish = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "matrix.example.org",
        "element.example.org",
        "8448",
        "198.51.100.20",
    ] {
        assert!(finish.contains(expected), "{expected}: {finish}");
    }
    screenshot(&browser, "10-finish").await;

    // The config file.
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let mode = std::fs::metadata(&server.config_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(config["server_name"], "example.org");
    assert_eq!(config["public_baseurl"], "https://matrix.example.org/");
    assert!(
        config["tls_certificate_path"].is_null() && config["acme"]["enabled"] != true,
        "self-signed: {text}"
    );
    assert_eq!(config["enable_registration"], true);
    assert_eq!(config["registration_requires_token"], true);
    assert_eq!(config["turn_relay_enabled"], true);
    assert_eq!(config["turn_external_ip"], "198.51.100.20");
    assert_eq!(config["element"]["host"], "element.example.org");
    assert!(
        config["registration_shared_secret"]
            .as_str()
            .is_some_and(|s| s.len() == 64)
    );
    assert_eq!(config["listeners"].as_sequence().unwrap().len(), 3);

    // The new admin logs in over the client API, on the same address.
    let session = server.login_session("boss", PASSWORD).await;
    let (status, whoami) = server.whoami(&session.access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], "@boss:example.org");

    // The setup pages are gone.
    browser.goto(&format!("{base}/setup/")).await.unwrap();
    let source = browser.source().await.unwrap();
    assert!(source.contains("M_UNRECOGNIZED"), "{source}");
    let (status, _) = server.get("/setup/names", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    browser.close().await.unwrap();
}
