//! The media repository over HTTP: uploads (direct and `/create` + `PUT`), downloads through the
//! authenticated and the legacy endpoints, ranges, thumbnails of each image format, the safety
//! headers, deduplication, the decompression-bomb guard, federation media with X-Matrix, and the
//! admin CLI.

use crate::common;

use std::{io::Cursor, path::Path, time::Duration};

use common::{OPEN_REGISTRATION, Session, TestServer, assert_error, assert_success, send, stdout};
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V1: &str = "/_matrix/client/v1/media";
const LEGACY: &str = "/_matrix/media/v3";

/// Uploads `bytes`; returns the `mxc://` URI.
async fn upload(
    server: &TestServer,
    who: &Session,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> String {
    let (status, body) = try_upload(server, Some(who), bytes, content_type, filename).await;
    assert_eq!(status, 200, "{body}");
    body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned()
}

async fn try_upload(
    server: &TestServer,
    who: Option<&Session>,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let path = match filename {
        Some(name) => format!("{LEGACY}/upload?filename={name}"),
        None => format!("{LEGACY}/upload"),
    };
    let mut request = server
        .builder(Method::POST, &path)
        .header(header::CONTENT_TYPE, content_type)
        .body(bytes);
    if let Some(who) = who {
        request = request.bearer_auth(&who.access_token);
    }
    let reply = send(request).await;
    (reply.status, reply.body)
}

/// `server/id` of an `mxc://server/id` URI.
fn id_of(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").expect("an mxc URI")
}

struct Download {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Download {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn fetch(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Download {
    let mut request = server.builder(Method::GET, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    Download {
        status: response.status(),
        headers: response.headers().clone(),
        bytes: response.bytes().await.expect("body").to_vec(),
    }
}

/// A fresh server where alice has uploaded `bytes`: (server, alice, mxc URI).
async fn alice_uploads(
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (TestServer, Session, String) {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let mxc = upload(&server, &alice, bytes, content_type, filename).await;
    (server, alice, mxc)
}

async fn download(server: &TestServer, who: &Session, mxc: &str) -> Download {
    fetch(
        server,
        &format!("{V1}/download/{}", id_of(mxc)),
        who.token(),
        &[],
    )
    .await
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn content_files(server: &TestServer) -> Vec<std::path::PathBuf> {
    files_under(&server.data_dir.join("media_store/content"))
}

/// Bytes that do not compress and repeat no pattern a bug could hide behind.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn assert_safety_headers(download: &Download) {
    let csp = download.header("content-security-policy");
    assert!(csp.starts_with("sandbox;"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'none'"), "{csp}");
    assert_eq!(download.header("x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn uploads_round_trip_byte_for_byte_small_and_large() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;

    let small = b"hello media".to_vec();
    let mxc = upload(
        &server,
        &alice,
        small.clone(),
        "text/plain",
        Some("hello.txt"),
    )
    .await;
    assert!(mxc.starts_with("mxc://test.local/"), "{mxc}");
    let got = download(&server, &bob, &mxc).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, small);
    assert_eq!(got.header("content-type"), "text/plain; charset=UTF-8");
    assert_eq!(got.header("content-length"), small.len().to_string());
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=hello.txt"
    );
    assert!(got.header("cache-control").contains("max-age=86400"));
    assert_safety_headers(&got);

    // The `/{fileName}` form names the download as asked.
    let named = fetch(
        &server,
        &format!("{V1}/download/{}/report%20final.txt", id_of(&mxc)),
        bob.token(),
        &[],
    )
    .await;
    assert_eq!(named.status, 200);
    assert_eq!(
        named.header("content-disposition"),
        "inline; filename=\"report final.txt\""
    );

    // Larger than 10 MB: streamed in and out, byte for byte, through both endpoint families.
    let large = noise(12 * 1024 * 1024 + 17, 7);
    let mxc = upload(
        &server,
        &alice,
        large.clone(),
        "application/octet-stream",
        None,
    )
    .await;
    let got = download(&server, &bob, &mxc).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), large.len().to_string());
    assert!(got.bytes == large, "the large download differs");
    let legacy = fetch(
        &server,
        &format!("{LEGACY}/download/{}", id_of(&mxc)),
        None,
        &[],
    )
    .await;
    assert_eq!(legacy.status, 200);
    assert!(legacy.bytes == large, "the legacy download differs");
    assert_eq!(
        legacy.header("content-disposition"),
        "attachment",
        "octet-stream is never inline"
    );
    // Nothing is left in the upload area.
    assert!(files_under(&server.data_dir.join("media_store/tmp")).is_empty());

    // The limit clients are told about.
    let (status, body) = server.get(&format!("{V1}/config"), alice.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["m.upload.size"], 50 * 1024 * 1024);
}

#[tokio::test]
async fn too_large_uploads_are_refused_and_leave_nothing() {
    let server =
        TestServer::start_with_config(&format!("{OPEN_REGISTRATION}max_upload_size: 1M\n")).await;
    let alice = server.register("alice", "correct horse").await;
    let response = try_upload(
        &server,
        Some(&alice),
        vec![0u8; 1024 * 1024 + 1],
        "application/octet-stream",
        None,
    )
    .await;
    assert_error(&response, 413, "M_TOO_LARGE");

    // Without a Content-Length (chunked), the limit holds while the body streams in.
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST {LEGACY}/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.access_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..20 {
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if stream.write_all(&framed).await.is_err() {
            break; // the server may stop reading once it has answered
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("M_TOO_LARGE"), "{reply}");

    assert!(content_files(&server).is_empty());
    assert!(files_under(&server.data_dir.join("media_store/tmp")).is_empty());
    // A small upload still works.
    upload(
        &server,
        &alice,
        vec![1, 2, 3],
        "application/octet-stream",
        None,
    )
    .await;
}

#[tokio::test]
async fn ranges_and_revalidation() {
    let bytes = noise(1000, 3);
    let (server, alice, mxc) = alice_uploads(bytes.clone(), "video/mp4", Some("clip.mp4")).await;
    let path = format!("{V1}/download/{}", id_of(&mxc));

    let part = fetch(&server, &path, alice.token(), &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.bytes, &bytes[10..20]);
    assert_eq!(part.header("content-range"), "bytes 10-19/1000");
    assert_eq!(part.header("content-length"), "10");
    assert_safety_headers(&part);

    let tail = fetch(&server, &path, alice.token(), &[("range", "bytes=-5")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.bytes, &bytes[995..]);
    let open = fetch(&server, &path, alice.token(), &[("range", "bytes=990-")]).await;
    assert_eq!(open.bytes, &bytes[990..]);
    assert_eq!(open.header("content-range"), "bytes 990-999/1000");

    let beyond = fetch(&server, &path, alice.token(), &[("range", "bytes=1000-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), "bytes */1000");

    let whole = fetch(&server, &path, alice.token(), &[]).await;
    assert_eq!(whole.header("accept-ranges"), "bytes");
    let etag = whole.header("etag").to_owned();
    let cached = fetch(&server, &path, alice.token(), &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.bytes.is_empty());
    // A stale If-Range gets the whole file.
    let stale = fetch(
        &server,
        &path,
        alice.token(),
        &[("range", "bytes=0-1"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.bytes, bytes);
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).expect("encode");
    bytes.into_inner()
}

/// A picture with some structure, so encoders have something to do.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

/// A GIF with two frames of different colours; thumbnails show the first.
fn two_frame_gif(width: u32, height: u32) -> Vec<u8> {
    use image::{Delay, Frame, codecs::gif::GifEncoder};
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = RgbaImage::from_pixel(width, height, image::Rgba(colour));
            encoder
                .encode_frame(Frame::from_parts(
                    frame,
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                ))
                .expect("gif frame");
        }
    }
    bytes
}

async fn thumbnail(
    server: &TestServer,
    who: &Session,
    mxc: &str,
    (width, height, method): (u32, u32, &str),
) -> Download {
    fetch(
        server,
        &format!(
            "{V1}/thumbnail/{}?width={width}&height={height}&method={method}",
            id_of(mxc)
        ),
        who.token(),
        &[],
    )
    .await
}

#[tokio::test]
async fn thumbnails_of_each_format_have_synapses_sizes() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let source = DynamicImage::ImageRgb8(picture(1000, 500));
    let webp = DynamicImage::ImageRgba8(source.to_rgba8());
    let inputs = [
        ("image/png", encode(&source, ImageFormat::Png), "image/png"),
        (
            "image/jpeg",
            encode(&source, ImageFormat::Jpeg),
            "image/jpeg",
        ),
        ("image/webp", encode(&webp, ImageFormat::WebP), "image/jpeg"),
        ("image/gif", two_frame_gif(1000, 500), "image/png"),
    ];
    for (content_type, bytes, thumbnail_type) in inputs {
        let mxc = upload(&server, &alice, bytes, content_type, None).await;
        for (request, expected) in [
            ((96, 96, "crop"), (96, 96)),
            ((32, 32, "crop"), (32, 32)),
            ((320, 240, "scale"), (320, 160)),
            ((800, 600, "scale"), (800, 400)),
            // Not a configured size: the nearest one that is at least as large.
            ((100, 100, "scale"), (320, 160)),
        ] {
            let got = thumbnail(&server, &alice, &mxc, request).await;
            assert_eq!(
                got.status,
                200,
                "{content_type} {request:?}: {}",
                got.json()
            );
            assert_eq!(got.header("content-type"), thumbnail_type, "{content_type}");
            assert_safety_headers(&got);
            let decoded = image::load_from_memory(&got.bytes).expect("a thumbnail decodes");
            assert_eq!(
                (decoded.width(), decoded.height()),
                expected,
                "{content_type} {request:?}"
            );
            if content_type == "image/gif" {
                let pixel = decoded.to_rgba8().get_pixel(10, 10).0;
                assert!(
                    pixel[0] > 200 && pixel[2] < 50,
                    "first frame is red: {pixel:?}"
                );
            }
        }
        // Made once, then served from the cache: the same bytes again.
        let first = thumbnail(&server, &alice, &mxc, (96, 96, "crop")).await;
        let again = thumbnail(&server, &alice, &mxc, (96, 96, "crop")).await;
        assert_eq!(first.bytes, again.bytes);
    }
    let thumbnails = files_under(&server.data_dir.join("media_store/thumbnails"));
    assert_eq!(thumbnails.len(), 4 * 4, "{thumbnails:?}");

    // A file that is not an image has no thumbnail.
    let text = upload(&server, &alice, b"just text".to_vec(), "text/plain", None).await;
    let got = thumbnail(&server, &alice, &text, (96, 96, "crop")).await;
    assert_eq!(got.status, 400, "{}", got.json());
    // Nonsense sizes are refused.
    let png = upload(
        &server,
        &alice,
        encode(&source, ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    let got = thumbnail(&server, &alice, &png, (0, 96, "crop")).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["errcode"], "M_INVALID_PARAM");
}

#[tokio::test]
async fn dynamic_thumbnails_are_made_to_measure() {
    let server =
        TestServer::start_with_config(&format!("{OPEN_REGISTRATION}dynamic_thumbnails: true\n"))
            .await;
    let alice = server.register("alice", "correct horse").await;
    let source = DynamicImage::ImageRgb8(picture(600, 300));
    let mxc = upload(
        &server,
        &alice,
        encode(&source, ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    for (request, expected) in [
        ((50, 70, "crop"), (50, 70)),
        ((200, 200, "scale"), (200, 100)),
    ] {
        let got = thumbnail(&server, &alice, &mxc, request).await;
        assert_eq!(got.status, 200, "{}", got.json());
        let decoded = image::load_from_memory(&got.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), expected);
    }
}

/// A PNG whose header claims `width`×`height` pixels, followed by a little compressed data:
/// decoding it would need gigabytes.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
        out
    }
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    // A zlib stream of zeros: a few bytes that inflate to a lot.
    let idat = [
        0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0xa3, 0x60, 0x14, 0x0c, 0x77, 0x00, 0x00,
    ];
    [
        b"\x89PNG\r\n\x1a\n".to_vec(),
        chunk(b"IHDR", &header),
        chunk(b"IDAT", &idat),
        chunk(b"IEND", &[]),
    ]
    .concat()
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_without_decoding_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    // 50 000 × 50 000 RGBA: 2.5 G pixels, 10 GB decoded; the file is under 100 bytes.
    let bomb = png_bomb(50_000, 50_000);
    assert!(bomb.len() < 100);
    let mxc = upload(&server, &alice, bomb, "image/png", Some("bomb.png")).await;
    let before = peak_rss_kib(server.pid());
    for request in [(32, 32, "crop"), (800, 600, "scale")] {
        let got = thumbnail(&server, &alice, &mxc, request).await;
        assert_eq!(got.status, 413, "{}", got.json());
        assert_eq!(got.json()["errcode"], "M_TOO_LARGE");
    }
    let after = peak_rss_kib(server.pid());
    assert!(
        after < before + 20 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    // The file itself is still there to download; it is just never decoded.
    assert_eq!(download(&server, &alice, &mxc).await.status, 200);
    assert!(files_under(&server.data_dir.join("media_store/thumbnails")).is_empty());
}

#[tokio::test]
async fn dangerous_types_are_attachments_in_a_sandbox() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    for (content_type, body, name) in [
        (
            "text/html",
            "<script>alert(document.cookie)</script>",
            "page.html",
        ),
        (
            "image/svg+xml",
            "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
            "vector.svg",
        ),
        ("application/javascript", "alert(1)", "code.js"),
    ] {
        let mxc = upload(
            &server,
            &alice,
            body.as_bytes().to_vec(),
            content_type,
            Some(name),
        )
        .await;
        for path in [
            format!("{V1}/download/{}", id_of(&mxc)),
            format!("{LEGACY}/download/{}", id_of(&mxc)),
        ] {
            let got = fetch(&server, &path, alice.token(), &[]).await;
            assert_eq!(got.status, 200);
            assert_eq!(
                got.header("content-disposition"),
                format!("attachment; filename={name}"),
                "{content_type}"
            );
            assert_safety_headers(&got);
        }
    }
    let png = encode(&DynamicImage::ImageRgb8(picture(4, 4)), ImageFormat::Png);
    let mxc = upload(&server, &alice, png, "image/png", Some("dot.png")).await;
    let got = download(&server, &alice, &mxc).await;
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=dot.png"
    );
    assert_safety_headers(&got);
}

#[tokio::test]
async fn authenticated_endpoints_need_a_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let mxc = upload(&server, &alice, b"secret".to_vec(), "text/plain", None).await;
    for path in [
        format!("{V1}/download/{}", id_of(&mxc)),
        format!("{V1}/download/{}/name.txt", id_of(&mxc)),
        format!("{V1}/thumbnail/{}?width=32&height=32", id_of(&mxc)),
        format!("{V1}/config"),
        format!("{LEGACY}/config"),
    ] {
        let response = server.get(&path, None).await;
        assert_error(&response, 401, "M_MISSING_TOKEN");
        let response = server.get(&path, Some("not-a-token")).await;
        assert_error(&response, 401, "M_UNKNOWN_TOKEN");
    }
    let response = try_upload(&server, None, b"x".to_vec(), "text/plain", None).await;
    assert_error(&response, 401, "M_MISSING_TOKEN");
    let response = server
        .post("/_matrix/media/v1/create", None, json!({}))
        .await;
    assert_error(&response, 401, "M_MISSING_TOKEN");
    // The legacy endpoint serves without a token (enable_authenticated_media is off by default).
    let legacy = fetch(
        &server,
        &format!("{LEGACY}/download/{}", id_of(&mxc)),
        None,
        &[],
    )
    .await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.bytes, b"secret");
    // URL previews are off: the endpoint does not exist.
    let response = server
        .get(
            &format!("{V1}/preview_url?url=https://example.org"),
            alice.token(),
        )
        .await;
    assert_error(&response, 404, "M_UNRECOGNIZED");
    // Another server's media is fetched from it: a server this one may not contact (loopback,
    // refused by the default ip_range_blacklist) is `502`, as Synapse answers (the fetches
    // themselves are tested in tests/federation/media.rs).
    let response = fetch(
        &server,
        &format!("{V1}/download/127.0.0.1:1/abcdef"),
        alice.token(),
        &[],
    )
    .await;
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn with_enable_authenticated_media_new_uploads_skip_the_legacy_endpoints() {
    let server = TestServer::start_with_config(&format!(
        "{OPEN_REGISTRATION}enable_authenticated_media: true\n"
    ))
    .await;
    let alice = server.register("alice", "correct horse").await;
    let mxc = upload(&server, &alice, b"new".to_vec(), "text/plain", None).await;
    let legacy = fetch(
        &server,
        &format!("{LEGACY}/download/{}", id_of(&mxc)),
        None,
        &[],
    )
    .await;
    assert_eq!(legacy.status, 404);
    assert_eq!(legacy.json()["errcode"], "M_NOT_FOUND");
    assert_eq!(download(&server, &alice, &mxc).await.bytes, b"new");
}

#[tokio::test]
async fn identical_uploads_share_one_file_and_admin_deletion_frees_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let bytes = noise(200_000, 11);
    let first = upload(&server, &alice, bytes.clone(), "image/png", Some("a.png")).await;
    let second = upload(&server, &bob, bytes.clone(), "image/png", Some("b.png")).await;
    assert_ne!(first, second);
    let files = content_files(&server);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);
    // Each ID keeps its own metadata.
    let got = download(&server, &alice, &second).await;
    assert_eq!(got.header("content-disposition"), "inline; filename=b.png");

    let listed = assert_success(&server.cli(&["admin", "media", "list", "alice"], None));
    assert!(listed.contains(&first), "{listed}");
    assert!(listed.contains("a.png"), "{listed}");
    assert!(!listed.contains(&second), "{listed}");

    assert_success(&server.cli(&["admin", "media", "delete", &first], None));
    assert_eq!(download(&server, &alice, &first).await.status, 404);
    assert_eq!(download(&server, &alice, &second).await.bytes, bytes);
    assert_eq!(
        content_files(&server).len(),
        1,
        "bob's copy still needs the file"
    );

    assert_success(&server.cli(&["admin", "media", "delete", &second], None));
    assert_eq!(download(&server, &alice, &second).await.status, 404);
    assert!(content_files(&server).is_empty());

    let output = server.cli(&["admin", "media", "delete", &second], None);
    assert!(!output.status.success(), "{}", stdout(&output));
    let output = server.cli(&["admin", "media", "delete", "not-an-mxc"], None);
    assert!(!output.status.success());
}

#[tokio::test]
async fn asynchronous_upload_with_create_and_put() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let (status, created) = server
        .post("/_matrix/media/v1/create", alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{created}");
    let mxc = created["content_uri"].as_str().unwrap().to_owned();
    assert!(created["unused_expires_at"].as_u64().unwrap() > 0);
    let put_path = format!("{LEGACY}/upload/{}", id_of(&mxc));

    // Not uploaded yet: a download waits, then gives up.
    let waited = fetch(
        &server,
        &format!("{V1}/download/{}?timeout_ms=200", id_of(&mxc)),
        bob.token(),
        &[],
    )
    .await;
    assert_eq!(waited.status, 504);
    assert_eq!(waited.json()["errcode"], "M_NOT_YET_UPLOADED");

    // A download that waits gets the content as soon as it arrives.
    let waiting = {
        let path = format!("{V1}/download/{}?timeout_ms=20000", id_of(&mxc));
        let request = server
            .builder(Method::GET, &path)
            .bearer_auth(&bob.access_token);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (response.status(), response.bytes().await.unwrap().to_vec())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let put = |who: &Session, body: &'static [u8]| {
        server
            .builder(Method::PUT, &put_path)
            .bearer_auth(&who.access_token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
    };
    let reply = send(put(&bob, b"not yours")).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.body["errcode"], "M_FORBIDDEN");
    let reply = send(put(&alice, b"later content")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({}));
    let reply = send(put(&alice, b"again")).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["errcode"], "M_CANNOT_OVERWRITE_MEDIA");

    let (status, bytes) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(bytes, b"later content");

    // An ID that was never created.
    let reply = send(
        server
            .builder(Method::PUT, &format!("{LEGACY}/upload/test.local/nosuchid"))
            .bearer_auth(&alice.access_token)
            .body("x"),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // At most max_pending_media_uploads (5) IDs wait at once.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _) = server
            .post("/_matrix/media/v1/create", bob.token(), json!({}))
            .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
}

/// Signs a GET request as this server with the signing key in its data directory.
fn x_matrix(server: &TestServer, origin: &str, uri: &str) -> String {
    use base64::Engine;
    use ruma::{
        api::federation::authentication::{XMatrix, XMatrixSigningInput},
        signatures::Ed25519KeyPair,
    };
    let text = std::fs::read_to_string(server.data_dir.join("signing.key")).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let document = base64::engine::general_purpose::STANDARD
        .decode(parts[2])
        .unwrap();
    let key_pair = Ed25519KeyPair::from_der(&document, parts[1].to_owned()).unwrap();
    let request = http::Request::get(uri).body(Vec::<u8>::new()).unwrap();
    let input = XMatrixSigningInput::new(
        origin.try_into().unwrap(),
        "test.local".try_into().unwrap(),
        &key_pair,
    );
    XMatrix::sign_http_request(&request, input)
        .unwrap()
        .to_string()
}

/// The parts of a `multipart/mixed` body: (headers, body) each.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim();
    let delimiter = format!("\r\n--{boundary}");
    let mut body = [b"\r\n".as_slice(), body].concat();
    let mut parts = Vec::new();
    loop {
        let start = find(&body, delimiter.as_bytes()).expect("a delimiter") + delimiter.len();
        body.drain(..start);
        if body.starts_with(b"--") {
            return parts;
        }
        body.drain(..2); // CRLF after the delimiter
        let end = find(&body, delimiter.as_bytes()).expect("the next delimiter");
        let part = &body[..end];
        let split = find(part, b"\r\n\r\n").expect("part headers");
        parts.push((
            String::from_utf8_lossy(&part[..split]).into_owned(),
            part[split + 4..].to_vec(),
        ));
        body.drain(..end);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn federation_media_is_multipart_for_signed_requests() {
    let bytes = noise(5000, 5);
    let (server, alice, mxc) =
        alice_uploads(bytes.clone(), "application/pdf", Some("doc.pdf")).await;
    let media_id = id_of(&mxc).split('/').nth(1).unwrap().to_owned();
    let uri = format!("/_matrix/federation/v1/media/download/{media_id}");

    let signed = fetch(
        &server,
        &uri,
        None,
        &[("authorization", &x_matrix(&server, "test.local", &uri))],
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.json());
    let content_type = signed.header("content-type").to_owned();
    assert!(
        content_type.starts_with("multipart/mixed; boundary="),
        "{content_type}"
    );
    let parts = multipart_parts(&content_type, &signed.bytes);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].0.contains("application/json"), "{}", parts[0].0);
    assert_eq!(
        serde_json::from_slice::<Value>(&parts[0].1).unwrap(),
        json!({})
    );
    assert!(
        parts[1].0.contains("Content-Type: application/pdf"),
        "{}",
        parts[1].0
    );
    assert!(
        parts[1]
            .0
            .contains("Content-Disposition: attachment; filename=doc.pdf"),
        "{}",
        parts[1].0
    );
    assert!(parts[1].1 == bytes, "the federation download differs");

    // A thumbnail over federation.
    let png = encode(
        &DynamicImage::ImageRgb8(picture(640, 480)),
        ImageFormat::Png,
    );
    let mxc = upload(&server, &alice, png, "image/png", None).await;
    let media_id = id_of(&mxc).split('/').nth(1).unwrap().to_owned();
    let uri =
        format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=96&height=96&method=crop");
    let signed = fetch(
        &server,
        &uri,
        None,
        &[("authorization", &x_matrix(&server, "test.local", &uri))],
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.json());
    let parts = multipart_parts(signed.header("content-type"), &signed.bytes);
    let thumbnail = image::load_from_memory(&parts[1].1).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (96, 96));

    // Unsigned, signed for another URI, or by a server whose key is unknown: refused.
    let download_uri = format!("/_matrix/federation/v1/media/download/{media_id}");
    let unsigned = fetch(&server, &download_uri, None, &[]).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.json()["errcode"], "M_UNAUTHORIZED");
    let wrong_uri = fetch(
        &server,
        &download_uri,
        None,
        &[("authorization", &x_matrix(&server, "test.local", &uri))],
    )
    .await;
    assert_eq!(wrong_uri.status, 401);
    assert_eq!(wrong_uri.json()["errcode"], "M_UNAUTHORIZED");
    let stranger = fetch(
        &server,
        &download_uri,
        None,
        &[(
            "authorization",
            &x_matrix(&server, "other.example", &download_uri),
        )],
    )
    .await;
    assert_eq!(stranger.status, 401);
    assert_eq!(stranger.json()["errcode"], "M_UNAUTHORIZED");
    // Unknown media.
    let uri = "/_matrix/federation/v1/media/download/nosuchmedia";
    let missing = fetch(
        &server,
        uri,
        None,
        &[("authorization", &x_matrix(&server, "test.local", uri))],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn purge_remote_deletes_old_cached_remote_media_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let local = upload(&server, &alice, b"local".to_vec(), "text/plain", None).await;

    // A cached copy put in place by hand, as a fetch over federation leaves it: a row for
    // mxc://other.example/cached and its file.
    let bytes = b"cached remote bytes";
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    let path = server
        .data_dir
        .join("media_store/content")
        .join(&sha256[0..2])
        .join(&sha256[2..4])
        .join(&sha256);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let old = 1_000_000_000_000i64; // 2001
    rusqlite::Connection::open(server.data_dir.join("appliance.db"))
        .unwrap()
        .execute(
            "INSERT INTO media (origin, media_id, content_type, size, sha256, created_ts, uploaded_ts,
                 last_access_ts, authenticated)
             VALUES ('other.example', 'cached', 'text/plain', ?1, ?2, ?3, ?3, ?3, 0)",
            rusqlite::params![bytes.len() as i64, sha256, old],
        )
        .unwrap();
    let cached = download(&server, &alice, "mxc://other.example/cached").await;
    assert_eq!(cached.bytes, bytes, "the cached copy is served");

    let output = assert_success(&server.cli(
        &["admin", "media", "purge-remote", "--older-than", "30d"],
        None,
    ));
    assert!(output.contains("deleted 0"), "served just now: {output}");
    rusqlite::Connection::open(server.data_dir.join("appliance.db"))
        .unwrap()
        .execute(
            "UPDATE media SET last_access_ts = ?1 WHERE origin = 'other.example'",
            [old],
        )
        .unwrap();
    let output = assert_success(&server.cli(
        &["admin", "media", "purge-remote", "--older-than", "30d"],
        None,
    ));
    assert!(output.contains("deleted 1"), "{output}");
    assert!(!path.exists());
    // (Asking for it again would fetch it from other.example.)
    let rows: i64 = rusqlite::Connection::open(server.data_dir.join("appliance.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM media WHERE origin = 'other.example'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(download(&server, &alice, &local).await.bytes, b"local");
}

#[tokio::test]
async fn purge_local_deletes_old_unused_media_but_keeps_avatars() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let old_file = upload(&server, &alice, b"old".to_vec(), "text/plain", None).await;
    let old_shared = upload(&server, &alice, b"shared".to_vec(), "text/plain", None).await;
    let avatar = upload(&server, &alice, b"avatar".to_vec(), "image/png", None).await;
    let room_avatar = upload(&server, &alice, b"room avatar".to_vec(), "image/png", None).await;
    // The same bytes as `old_shared`, uploaded now: the content file stays for it.
    let recent_shared = upload(&server, &alice, b"shared".to_vec(), "text/plain", None).await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
            alice.token(),
            json!({"avatar_url": avatar}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"initial_state": [{"type": "m.room.avatar", "state_key": "", "content": {"url": room_avatar}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Everything but `recent_shared` was last used in 2001.
    let old = 1_000_000_000_000i64;
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    for mxc in [&old_file, &old_shared, &avatar, &room_avatar] {
        let media_id = mxc.rsplit('/').next().unwrap();
        let changed = db
            .execute(
                "UPDATE media SET created_ts = ?1, uploaded_ts = ?1, last_access_ts = ?1 WHERE media_id = ?2",
                rusqlite::params![old, media_id],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let content_files = || count_files(&server.data_dir.join("media_store/content"));
    let files_before = content_files();

    let output = assert_success(&server.cli(
        &["admin", "media", "purge-local", "--older-than", "30d"],
        None,
    ));
    assert!(output.contains("deleted 2"), "{output}");
    for gone in [&old_file, &old_shared] {
        let reply = download(&server, &alice, gone).await;
        assert_eq!(reply.status, 404, "{gone}");
    }
    for kept in [&avatar, &room_avatar, &recent_shared] {
        assert_eq!(download(&server, &alice, kept).await.status, 200, "{kept}");
    }
    assert_eq!(
        content_files(),
        files_before - 1,
        "only the unshared old file's content is deleted"
    );
}

/// Regular files below `dir`.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { count_files(&path) } else { 1 })
        .sum()
}
