//! URL previews over HTTP against a web site served by the test on loopback: OpenGraph data and
//! the page's picture stored as media, redirects, the IP policy checked after DNS resolution
//! (loopback is refused unless whitelisted) and on redirects, the URL pattern blacklist, the
//! size limit, the legacy endpoint, and the endpoint off by default.
use crate::common;

use std::{io::Cursor, net::SocketAddr};

use common::{OPEN_REGISTRATION, Session, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const V1: &str = "/_matrix/client/v1/media/preview_url";

/// A 40x30 PNG.
fn picture() -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30]))
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// A small web site on 127.0.0.1: (status line, content type, body) per path.
async fn start_site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let (status, headers, body): (&str, String, Vec<u8>) = match path.as_str() {
                    "/page.html" => (
                        "200 OK",
                        "Content-Type: text/html; charset=utf-8\r\n".into(),
                        br#"<!doctype html><html><head><title>Fallback</title>
                        <meta property="og:title" content="A page worth sharing">
                        <meta property="og:description" content="What it is about">
                        <meta property="og:image" content="/picture.png">
                        </head><body>Hello</body></html>"#
                            .to_vec(),
                    ),
                    "/picture.png" => ("200 OK", "Content-Type: image/png\r\n".into(), picture()),
                    "/huge.png" => (
                        "200 OK",
                        "Content-Type: image/png\r\n".into(),
                        vec![0u8; 1024 * 1024],
                    ),
                    "/notes.txt" => (
                        "200 OK",
                        "Content-Type: text/plain\r\n".into(),
                        b"just text".to_vec(),
                    ),
                    "/moved" => ("302 Found", "Location: /page.html\r\n".into(), Vec::new()),
                    "/to-private" => (
                        "302 Found",
                        "Location: http://10.255.255.1/page.html\r\n".into(),
                        Vec::new(),
                    ),
                    _ => ("404 Not Found", String::new(), Vec::new()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    address
}

async fn preview(server: &TestServer, who: &Session, url: &str) -> (StatusCode, Value) {
    preview_at(server, who, V1, url).await
}

async fn preview_at(
    server: &TestServer,
    who: &Session,
    endpoint: &str,
    url: &str,
) -> (StatusCode, Value) {
    let url: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    server
        .get(&format!("{endpoint}?url={url}"), who.token())
        .await
}

fn with_previews(extra: &str) -> String {
    format!("{OPEN_REGISTRATION}url_preview_enabled: true\nmax_spider_size: 64K\n{extra}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_is_previewed_with_its_picture_stored_as_media() {
    let site = start_site().await;
    let server = TestServer::start_with_config(&with_previews(
        "url_preview_ip_range_whitelist: ['127.0.0.1']\n",
    ))
    .await;
    let alice = server.register("alice", "correct horse").await;

    let (status, og) = preview(&server, &alice, &format!("http://{site}/page.html")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "A page worth sharing");
    assert_eq!(og["og:description"], "What it is about");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 40);
    assert_eq!(og["og:image:height"], 30);
    assert_eq!(og["matrix:image:size"], picture().len());
    let mxc = og["og:image"].as_str().expect("og:image is an mxc URI");
    let media = mxc.strip_prefix("mxc://").expect(mxc);
    let download = server
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{media}",
            server.base_url
        ))
        .bearer_auth(alice.token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap(), picture());

    // Through a redirect, and by the legacy endpoint.
    let (status, og) = preview(&server, &alice, &format!("http://{site}/moved")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "A page worth sharing");
    let (status, og) = preview_at(
        &server,
        &alice,
        "/_matrix/media/v3/preview_url",
        &format!("http://{site}/notes.txt"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(og, serde_json::json!({}), "plain text has no preview");

    // A picture over max_spider_size is not stored.
    let (status, error) = preview(&server, &alice, &format!("http://{site}/huge.png")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    assert_eq!(error["errcode"], "M_UNKNOWN");

    // A redirect to a private address is refused (the whitelist names 127.0.0.1 only).
    let (status, error) = preview(&server, &alice, &format!("http://{site}/to-private")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");

    // Bad input, and no token.
    let (status, error) = preview(&server, &alice, "ftp://example.org/file").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = preview(&server, &alice, "not a url").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = server
        .get(&format!("{V1}?url=http://{site}/page.html"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["errcode"], "M_MISSING_TOKEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_is_refused_after_dns_and_url_patterns_are_refused() {
    let site = start_site().await;
    let server = TestServer::start_with_config(&with_previews(
        "url_preview_url_blacklist:\n  - {path: '^/secret'}\n",
    ))
    .await;
    let alice = server.register("alice", "correct horse").await;
    // `localhost` is a name like any other until it is resolved to a loopback address.
    for url in [
        format!("http://localhost:{}/page.html", site.port()),
        format!("http://{site}/page.html"),
        format!("http://[::ffff:127.0.0.1]:{}/page.html", site.port()),
    ] {
        let (status, error) = preview(&server, &alice, &url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {error}");
        assert_eq!(error["errcode"], "M_UNKNOWN");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("IP address blocked"),
            "{error}"
        );
    }
    let (status, error) = preview(&server, &alice, "https://example.org/secret/plan").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("url pattern"),
        "{error}"
    );
}

#[tokio::test]
async fn previews_are_off_by_default() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let (status, error) = preview(&server, &alice, "https://example.org/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["errcode"], "M_UNRECOGNIZED");
}
