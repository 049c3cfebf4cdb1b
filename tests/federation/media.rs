//! Media across servers: pictures uploaded on Synapse download and thumbnail through the
//! appliance and the other way round, through each side's client API; a fake remote answers
//! what Synapse never would (stalls, oversized or cut-short files, redirect loops, redirects to
//! private addresses, no federation media endpoint) and the cache cap is honoured.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use rustls::RootCertStore;
use serde_json::Value;

use super::{
    FederatingAppliance,
    accounts::{Account, FEDERATION_DELAY},
    fake_server::FakeServer,
    support::{TestCa, free_port, tls_connect},
    synapse::{OPEN_REGISTRATION, Synapse},
};

/// An answer with its raw body.
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn errcode(&self) -> String {
        self.json()["errcode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One request to 127.0.0.1:`port` as `localhost` (TLS from the test CA); bounded by a
/// minute, so that a server that hangs fails the test instead of stalling it.
async fn raw(
    port: u16,
    roots: &RootCertStore,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&[u8], &str)>,
) -> Raw {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = match body {
        Some((bytes, content_type)) => {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
            Bytes::copy_from_slice(bytes)
        }
        None => Bytes::new(),
    };
    let request = builder.body(Full::new(bytes)).unwrap();
    let exchange = async {
        let stream = tls_connect(port, "localhost", roots, &[b"http/1.1"])
            .await
            .expect("TLS connection");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Raw {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within a minute"))
}

/// A `GET` of the client API with `token` (see [`raw`]).
async fn client_get(port: u16, roots: &RootCertStore, path: &str, token: &str) -> Raw {
    raw(port, roots, http::Method::GET, path, Some(token), None).await
}

/// A `width`×`height` PNG with a gradient (so that scaling changes it).
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// Uploads `bytes` as `user` on the server at `port`: (server name, media ID) of its `mxc://`.
async fn upload(user: &Account, roots: &RootCertStore, bytes: &[u8]) -> (String, String) {
    let reply = raw(
        user.port,
        roots,
        http::Method::POST,
        "/_matrix/media/v3/upload?filename=picture.png",
        Some(&user.token),
        Some((bytes, "image/png")),
    )
    .await;
    assert_eq!(reply.status, 200, "upload: {}", reply.json());
    let mxc = reply.json()["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = mxc.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

/// A thumbnail's pixel size.
#[track_caller]
fn dimensions(reply: &Raw) -> (u32, u32) {
    assert_eq!(reply.status, 200, "thumbnail: {}", reply.json());
    let image = image::load_from_memory(&reply.body).expect("a thumbnail image");
    (image.width(), image.height())
}

/// How many lines of Synapse's log mention `needle`.
fn synapse_log_count(synapse: &Synapse, needle: &str) -> usize {
    std::fs::read_to_string(synapse.dir.path().join("synapse.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// A picture uploaded on Synapse downloads through the appliance's authenticated and legacy
/// endpoints byte for byte, fetched from Synapse once for four concurrent requests, and
/// thumbnails from the cached original; a thumbnail of one not cached is Synapse's own, asked
/// for without the original; one uploaded on the appliance downloads and thumbnails
/// through Synapse (which fetches it from the appliance's federation endpoint). Missing remote
/// media is `404 M_NOT_FOUND`.
#[tokio::test(flavor = "multi_thread")]
async fn pictures_travel_both_ways_between_synapse_and_the_appliance() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, OPEN_REGISTRATION).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;

    // Synapse -> the appliance.
    let picture = png(400, 300);
    let (server, id) = upload(&bob, &roots, &picture).await;
    assert_eq!(server, synapse.server_name);
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let downloads = (0..4).map(|_| client_get(ours.port, &roots, &path, &alice.token));
    for reply in futures_util::future::join_all(downloads).await {
        assert_eq!(
            reply.status,
            200,
            "{}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
            reply.json(),
            ours.appliance.log_text(),
            synapse.log_tail()
        );
        assert!(
            reply.body == picture,
            "the download differs from the upload"
        );
        assert_eq!(reply.headers["content-type"], "image/png");
    }
    // One download from Synapse served all four (its access log has a line per request).
    let federation_path = format!("/_matrix/federation/v1/media/download/{id}");
    let deadline = std::time::Instant::now() + FEDERATION_DELAY;
    while synapse_log_count(&synapse, &federation_path) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            synapse.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The legacy endpoint serves the cached copy (authenticated media is off), with the name.
    let legacy = raw(
        ours.port,
        &roots,
        http::Method::GET,
        &format!("/_matrix/media/v3/download/{server}/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(legacy.status, 200, "{}", legacy.json());
    assert!(legacy.body == picture);
    assert!(
        legacy.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("picture.png"),
        "{:?}",
        legacy.headers
    );
    // A thumbnail, made from the cached original.
    let thumbnail = client_get(
        ours.port,
        &roots,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=crop"),
        &alice.token,
    )
    .await;
    assert_eq!(dimensions(&thumbnail), (32, 32));
    assert_eq!(
        synapse_log_count(&synapse, &federation_path),
        1,
        "more than one download of one file:\n{}",
        synapse.log_tail()
    );
    // A picture not cached here: Synapse's own thumbnail, byte for byte, without the original.
    let (_, id2) = upload(&bob, &roots, &png(500, 400)).await;
    let query = "width=32&height=32&method=crop";
    let ours_thumbnail = client_get(
        ours.port,
        &roots,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{id2}?{query}"),
        &alice.token,
    )
    .await;
    let synapse_thumbnail = client_get(
        synapse.port,
        &roots,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{id2}?{query}"),
        &bob.token,
    )
    .await;
    assert_eq!(dimensions(&ours_thumbnail), (32, 32));
    assert!(
        ours_thumbnail.body == synapse_thumbnail.body,
        "not Synapse's thumbnail"
    );
    assert_eq!(
        synapse_log_count(
            &synapse,
            &format!("/_matrix/federation/v1/media/download/{id2}")
        ),
        0,
        "the original was fetched for a thumbnail"
    );
    assert_eq!(
        synapse_log_count(
            &synapse,
            &format!("/_matrix/federation/v1/media/thumbnail/{id2}")
        ),
        1
    );
    // Media Synapse does not have.
    let missing = client_get(
        ours.port,
        &roots,
        &format!("/_matrix/client/v1/media/download/{server}/NoSuchMediaHere"),
        &alice.token,
    )
    .await;
    assert_eq!(
        (missing.status, missing.errcode().as_str()),
        (404, "M_NOT_FOUND")
    );

    // The appliance -> Synapse, through Synapse's client API.
    let picture = png(300, 200);
    let (server, id) = upload(&alice, &roots, &picture).await;
    assert_eq!(server, ours.server_name);
    let reply = client_get(
        synapse.port,
        &roots,
        &format!("/_matrix/client/v1/media/download/{server}/{id}"),
        &bob.token,
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}\nSynapse's log:\n{}",
        reply.json(),
        synapse.log_tail()
    );
    assert!(
        reply.body == picture,
        "Synapse's copy differs from the upload"
    );
    let thumbnail = client_get(
        synapse.port,
        &roots,
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=96&height=96&method=crop"),
        &bob.token,
    )
    .await;
    assert_eq!(dimensions(&thumbnail), (96, 96));
}

/// What the fake remote saw: each request's path and query.
type Seen = Arc<Mutex<Vec<String>>>;

/// Bytes of a given size, different for each `seed`.
fn file(seed: u8, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The fake remote's one real picture.
fn picture() -> Vec<u8> {
    png(120, 90)
}

/// A `multipart/mixed` answer: `{}` metadata, then `second` (part headers and body).
fn multipart(second_headers: &str, body: Body, length: Option<u64>) -> Response {
    let head = format!(
        "--fakeboundary\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--fakeboundary\r\n\
         {second_headers}\r\n\r\n"
    );
    let tail = "\r\n--fakeboundary--\r\n";
    let stream = futures_util::stream::once(async move { Ok::<_, axum::Error>(Bytes::from(head)) })
        .chain(body.into_data_stream())
        .chain(futures_util::stream::once(async move {
            Ok(Bytes::from_static(tail.as_bytes()))
        }));
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("multipart/mixed; boundary=fakeboundary"),
    );
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length.into());
    }
    response
}

/// The fake remote's media endpoints: the media ID says how it misbehaves.
fn fake_media_routes(port: u16, seen: Seen) -> Router {
    async fn download(
        State((port, seen)): State<(u16, Seen)>,
        Path(id): Path<String>,
        uri: http::Uri,
    ) -> Response {
        seen.lock().unwrap().push(uri.to_string());
        let png = "Content-Type: image/png\r\nContent-Disposition: inline; filename=fake.png";
        let redirect = |to: String| multipart(&format!("Location: {to}"), Body::empty(), None);
        let error = |status, errcode: &str| {
            let body = serde_json::json!({"errcode": errcode, "error": "no"});
            (status, axum::Json(body)).into_response()
        };
        match id.as_str() {
            "slow" => {
                let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
                multipart(png, Body::from_stream(never), None)
            }
            "huge" => {
                // 2 MiB in 64 KiB pieces, no length given: cut off while it streams.
                let chunk = || Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 65536]));
                let chunks = futures_util::stream::iter((0..32).map(move |_| chunk()));
                multipart(png, Body::from_stream(chunks), None)
            }
            // Declares far more than it sends, then ends: a broken-off answer.
            "short" => multipart(png, Body::from(file(1, 1000)), Some(500_000)),
            "loop" => redirect(format!("https://localhost:{port}/loop")),
            "private" => redirect(format!("https://10.255.255.1:{port}/file")),
            "cdn" => redirect(format!("https://localhost:{port}/cdn/file")),
            "legacy" => error(http::StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            "picture" => multipart(png, Body::from(picture()), None),
            id if id.starts_with("big-") => {
                let seed = id.as_bytes()[4];
                multipart(png, Body::from(file(seed, 250_000)), None)
            }
            _ => error(http::StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        }
    }
    async fn no_thumbnail(State((_, seen)): State<(u16, Seen)>, uri: http::Uri) -> Response {
        seen.lock().unwrap().push(uri.to_string());
        let body = serde_json::json!({"errcode": "M_UNKNOWN", "error": "cannot thumbnail"});
        (http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
    async fn redirect_loop(State((_, seen)): State<(u16, Seen)>, uri: http::Uri) -> Response {
        seen.lock().unwrap().push(uri.to_string());
        (http::StatusCode::FOUND, [(http::header::LOCATION, "/loop")]).into_response()
    }
    async fn cdn(State((_, seen)): State<(u16, Seen)>, uri: http::Uri) -> Response {
        seen.lock().unwrap().push(uri.to_string());
        ([(http::header::CONTENT_TYPE, "image/png")], file(2, 3000)).into_response()
    }
    async fn legacy(
        State((_, seen)): State<(u16, Seen)>,
        Path((_server, id)): Path<(String, String)>,
        uri: http::Uri,
    ) -> Response {
        seen.lock().unwrap().push(uri.to_string());
        (
            [
                (http::header::CONTENT_TYPE, "text/plain"),
                (
                    http::header::CONTENT_DISPOSITION,
                    "inline; filename=\"old.txt\"",
                ),
            ],
            format!("legacy answer for {id}"),
        )
            .into_response()
    }
    Router::new()
        .route("/_matrix/federation/v1/media/download/{id}", get(download))
        .route(
            "/_matrix/federation/v1/media/thumbnail/{id}",
            get(no_thumbnail),
        )
        .route("/loop", get(redirect_loop))
        .route("/cdn/file", get(cdn))
        .route("/_matrix/media/v3/download/{server}/{id}", get(legacy))
        .with_state((port, seen))
}

/// A remote that stalls, sends too much, breaks off, loops redirects or redirects to a private
/// address gets `502` in bounded time (`M_TOO_LARGE` for too much) and leaves nothing cached
/// or half-written; a `Location` to a public host and the legacy fallback work; the cache stays
/// under `max_remote_media_cache_size`, least recently used out first.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_media_servers_are_bounded_and_the_cache_is_capped() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let port = free_port();
    let seen = Seen::default();
    let fake =
        FakeServer::start_with_routes(&ca, port, fake_media_routes(port, seen.clone())).await;
    let ours = FederatingAppliance::start_with(
        &ca,
        &format!(
            "{}federation: {{client_timeout: 5s}}
max_upload_size: 1M
max_remote_media_cache_size: 600K
",
            FederatingAppliance::TEST_YAML
        ),
    );
    let alice = Account::register(ours.port, &roots, "alice").await;
    let get = |id: &str| {
        let path = format!(
            "/_matrix/client/v1/media/download/{}/{id}",
            fake.server_name
        );
        let (port, roots, token) = (ours.port, roots.clone(), alice.token.clone());
        async move { client_get(port, &roots, &path, &token).await }
    };
    let requests_for = |fragment: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|path| path.contains(fragment))
            .count()
    };
    let tmp_files = || {
        std::fs::read_dir(ours.appliance.data_dir.join("media_store/tmp"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };

    // Stalls after the headers: 502 once federation.client_timeout is up.
    let reply = get("slow").await;
    assert_eq!(
        (reply.status, reply.errcode().as_str()),
        (502, "M_UNKNOWN"),
        "{}",
        reply.json()
    );
    // Larger than max_upload_size while it streams.
    let reply = get("huge").await;
    assert_eq!(
        (reply.status, reply.errcode().as_str()),
        (502, "M_TOO_LARGE"),
        "{}",
        reply.json()
    );
    // Broken off before its declared length; nothing cached, so asked again next time.
    for _ in 0..2 {
        let reply = get("short").await;
        assert_eq!(reply.status, 502, "{}", reply.json());
    }
    assert_eq!(requests_for("/download/short"), 2);
    assert_eq!(tmp_files(), 0, "a half-written download was left behind");
    // A redirect loop ends after a few hops.
    let reply = get("loop").await;
    assert_eq!(reply.status, 502, "{}", reply.json());
    let hops = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|path| path.starts_with("/loop"))
        .count();
    assert!((1..=5).contains(&hops), "{hops} requests in the loop");
    // A redirect to a private address is refused before any connection.
    let reply = get("private").await;
    assert_eq!(reply.status, 502, "{}", reply.json());
    assert!(
        ours.appliance.log_text().contains("refused address"),
        "{}",
        ours.appliance.log_text()
    );
    // Unknown media.
    let reply = get("nothing-here").await;
    assert_eq!(
        (reply.status, reply.errcode().as_str()),
        (404, "M_NOT_FOUND")
    );

    // A Location on a public (here whitelisted) host is followed.
    let reply = get("cdn").await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert!(reply.body == file(2, 3000));
    // No federation media endpoint: the legacy one, told not to fetch from elsewhere.
    let reply = get("legacy").await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(&reply.body[..], b"legacy answer for legacy");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|path| path.starts_with(&format!(
                "/_matrix/media/v3/download/{}/legacy?allow_remote=false",
                url::form_urlencoded::byte_serialize(fake.server_name.as_bytes())
                    .collect::<String>()
            ))),
        "{:?}",
        seen.lock().unwrap()
    );

    // A server that cannot make a thumbnail: the original is fetched and thumbnailed here.
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{}/picture?width=32&height=32&method=crop",
        fake.server_name
    );
    let reply = client_get(ours.port, &roots, &path, &alice.token).await;
    assert_eq!(dimensions(&reply), (32, 32));
    assert_eq!(requests_for("/thumbnail/picture"), 1);
    assert_eq!(requests_for("/download/picture"), 1);
    assert!(get("picture").await.body == picture());

    // Three files of 250 KB under a 600 KiB cap: the least recently used goes.
    for id in ["big-a", "big-b", "big-c"] {
        let reply = get(id).await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        assert!(reply.body == file(id.as_bytes()[4], 250_000));
    }
    for id in ["big-b", "big-c", "big-a"] {
        assert!(get(id).await.body == file(id.as_bytes()[4], 250_000));
    }
    assert_eq!(requests_for("/download/big-a"), 2, "big-a was not evicted");
    assert_eq!(requests_for("/download/big-b"), 1);
    assert_eq!(requests_for("/download/big-c"), 1);
    assert_eq!(tmp_files(), 0);
}
