//! Every ruma endpoint the router serves gets hostile requests (bodies of the wrong shape, deep
//! nesting, huge numbers, invalid UTF-8 in path, query and body): none may answer `5xx`, and
//! every `4xx` must carry an `errcode`. Runs in-process on the real router and a real database.

use std::time::Duration;

use axum::body::Body;
use http::{Method, Request};
use tower::ServiceExt;

use super::ruma::REGISTERED_ROUTES;
use crate::{config::Config, services::Services};

/// A value of the right type for a path parameter, guessed from its name, so that the request
/// gets past path parsing to its body.
fn plausible(parameter: &str) -> &'static str {
    let name = parameter.to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        ("room_id_or_alias", "!room:test.local"),
        ("alias", "#alias:test.local"),
        ("room", "!room:test.local"),
        ("user", "@alice:test.local"),
        ("event_id", "$event"),
        ("event_type", "m.room.message"),
        ("state_key", "key"),
        ("server", "test.local"),
        ("device", "DEVICE"),
        ("txn", "txn1"),
        ("media", "media1"),
        ("version", "1"),
        ("session", "session1"),
        ("kind", "override"),
        ("scope", "global"),
        ("rule_id", ".m.rule.master"),
        ("type", "m.tag"),
        ("tag", "u.tag"),
        ("filter", "1"),
        ("key_id", "ed25519:key"),
    ];
    table
        .iter()
        .find(|(part, _)| name.contains(part))
        .map_or("x", |(_, value)| value)
}

/// `template` with every `{parameter}` replaced by `value(parameter)`.
fn fill(template: &str, value: impl Fn(&str) -> &'static str) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => value(name.trim_start_matches('*')).to_owned(),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

const QUERIES: &[&str] = &[
    "",
    "?limit=%FF&from=%FF&to=%FF&dir=%FF&timeout=%FF&filter=%FF&since=%FF&server_name=%FF",
    "?limit=99999999999999999999999&timeout=-1&from=&dir=x&filter=%7B%7B&since=&via=%FF",
];

fn bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        "{}",
        "[]",
        "null",
        "1",
        r#""a string""#,
        r#"{"type": 1}"#,
        r#"{"type": {}}"#,
        r#"{"type": "m.login.password"}"#,
        r#"{"type": "x", "type": 1}"#,
        r#"{"auth": {}}"#,
        r#"{"auth": {"type": 1, "session": 1}}"#,
        r#"{"identifier": {}}"#,
        r#"{"limit": 1e999, "timeout": 18446744073709551616, "count": -99999999999999999999}"#,
        r#"{"displayname": "\ud800"}"#,
    ]
    .iter()
    .map(|body| body.as_bytes().to_vec())
    .collect();
    bodies.push(b"{\"a\": \"\xff\xfe\"}".to_vec());
    bodies.push(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes());
    bodies.push(format!("{}1{}", "{\"a\":".repeat(120), "}".repeat(120)).into_bytes());
    bodies
}

/// What is wrong with an answer, if anything.
async fn judge(response: http::Response<Body>) -> Option<String> {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let has_errcode = body["errcode"]
        .as_str()
        .is_some_and(|e| e.starts_with("M_"));
    // Another server that could not be asked (the media of a server named `x`): `502` with an
    // errcode, as Synapse answers; any other 5xx is a failure here.
    let upstream = status == http::StatusCode::BAD_GATEWAY && has_errcode;
    if status.is_server_error() && !upstream {
        return Some(format!("{status} {text}"));
    }
    if status.is_client_error() {
        // A user-interactive-auth challenge is a 401 with its flows.
        let is_uiaa = status == 401 && body["flows"].is_array();
        if !has_errcode && !is_uiaa {
            return Some(format!("{status} without errcode: {text}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_answers_hostile_requests_with_5xx_or_without_errcode() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        server_name: "test.local".to_owned(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let services = Services::open(config).unwrap();
    let alice = ruma::user_id!("@alice:test.local");
    services
        .users
        .create(alice, None, false, |_| Ok(()))
        .await
        .unwrap();
    let router = super::router(services.clone());
    let mut routes = REGISTERED_ROUTES.lock().unwrap().clone();
    assert!(routes.len() > 100, "only {} routes recorded", routes.len());
    // The routes without a ruma type.
    routes.extend([
        (Method::POST, "/_synapse/admin/v1/register"),
        (Method::GET, "/_synapse/admin/v1/register"),
        (Method::GET, "/.well-known/matrix/client"),
        (Method::GET, "/.well-known/matrix/server"),
        (Method::GET, "/.well-known/matrix/support"),
    ]);
    let bodies = bodies();
    let mut failures = Vec::new();
    for (method, template) in routes {
        // These would end the session every other request authenticates with.
        if template.contains("logout") || template.contains("deactivate") {
            continue;
        }
        // A token per route: a route that revokes it spoils no other.
        let token = services
            .sessions
            .create(alice, None, None, None)
            .await
            .unwrap()
            .access_token;
        let paths = [
            fill(template, plausible),
            fill(template, |_| "%FF"),
            fill(template, |_| "x"),
        ];
        for path in &paths {
            for query in QUERIES {
                let with_body = method != Method::GET;
                let sent: &[Vec<u8>] = if with_body { &bodies } else { &bodies[..1] };
                for body in sent {
                    let request = Request::builder()
                        .method(method.clone())
                        .uri(format!("{path}{query}"))
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap();
                    let what = format!(
                        "{method} {path}{query} {}",
                        String::from_utf8_lossy(&body[..body.len().min(60)])
                    );
                    match tokio::time::timeout(
                        Duration::from_secs(20),
                        router.clone().oneshot(request),
                    )
                    .await
                    {
                        Err(_) => failures.push(format!("{what}: no answer in 20 s")),
                        Ok(response) => {
                            if let Some(wrong) = judge(response.unwrap()).await {
                                failures.push(format!("{what}: {wrong}"));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
