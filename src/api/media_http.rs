//! How stored media goes out over HTTP, shared by the client and federation handlers: streamed
//! from disk (never read whole into memory), with single byte ranges, `ETag` revalidation, and
//! the headers that keep a file uploaded by anyone from running script in the origin of the
//! homeserver or of the Element client beside it.
//!
//! ruma's media response types hold the whole file in a `Vec`, which is why these responses are
//! written here.
//!
//! Files are read in 64 KiB chunks as the client takes them; one byte range (`206`/`416`); `ETag`
//! is the SHA-256 (`304` on `If-None-Match`); Synapse's cache headers, the sandbox CSP, `nosniff`,
//! and `Content-Disposition` (inline only for Synapse's safe list, file names encoded by ruma's
//! `ContentDisposition`). Requests are still parsed by ruma. The federation endpoints
//! (`api/server/media.rs`) check the `X-Matrix` header with `ServerOrigin` and stream a
//! `multipart/mixed` body (JSON `{}`, then the file with its type and disposition).

use std::io::SeekFrom;

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{
    config::media::ThumbnailMethod,
    error::{Error, Result},
    services::media::{Content, ThumbnailRequest},
};

/// Synapse's list of types a browser may show inline (from Element's own list); everything else
/// is served as an attachment. SVG and HTML are intentionally absent: both can carry script.
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The sandbox a browser applies to a media URL opened directly: no script, no plugins but PDF.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Media never changes under its ID: clients cache it for a day; shared caches revalidate, so
/// that the authenticated endpoints stay authenticated (Synapse's policy).
const CACHE_CONTROL: &str = "public,max-age=86400,s-maxage=0,proxy-revalidate";

/// Bytes read from disk per body chunk.
const READ_CHUNK: usize = 64 * 1024;

/// The safety headers of every media response, errors included.
pub fn add_safety_headers(headers: &mut HeaderMap) {
    let mut set = |name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set("content-security-policy", CONTENT_SECURITY_POLICY);
    set("x-content-security-policy", "sandbox;");
    set("x-content-type-options", "nosniff");
    set("referrer-policy", "no-referrer");
    set("cross-origin-resource-policy", "cross-origin");
    set("x-robots-tag", "noindex, nofollow, noarchive, noimageindex");
}

/// A media handler's result: the file, or a Matrix error carrying the safety headers too.
pub struct MediaResponse(pub Result<Response>);

impl IntoResponse for MediaResponse {
    fn into_response(self) -> Response {
        let mut response = self.0.unwrap_or_else(IntoResponse::into_response);
        add_safety_headers(response.headers_mut());
        response
    }
}

/// `Content-Type`, with UTF-8 assumed for text without a charset (as Synapse does).
fn content_type(content: &Content) -> String {
    let media_type = content
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let lower = media_type.to_ascii_lowercase();
    if lower.starts_with("text/") && !lower.contains("charset") {
        format!("{media_type}; charset=UTF-8")
    } else {
        media_type.to_owned()
    }
}

/// `inline` only for the safe list, with the file name RFC 6266-encoded by ruma.
pub fn content_disposition(content_type: Option<&str>, filename: Option<&str>) -> String {
    let essence = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_CONTENT_TYPES.contains(&essence.as_str()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    ContentDisposition::new(kind)
        .with_filename(filename.map(str::to_owned))
        .to_string()
}

/// The file as the response to a download or thumbnail request, honouring `Range` and
/// `If-None-Match`. `filename` overrides the stored name (the `/{fileName}` form).
pub async fn file_response(
    request_headers: &HeaderMap,
    content: Content,
    filename: Option<&str>,
) -> Result<Response> {
    let etag = format!("\"{}\"", content.sha256);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(header::ETAG, header_value(&etag)?);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(header::CONTENT_TYPE, header_value(&content_type(&content))?);
    let filename = filename.or(content.filename.as_deref());
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(
            content.content_type.as_deref(),
            filename,
        ))?,
    );

    // A range is honoured unless `If-Range` names another version.
    let if_range_matches = request_headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range = match request_headers.get(header::RANGE) {
        Some(value) if if_range_matches => parse_range(value.to_str().unwrap_or(""), content.size),
        _ => RangeRequest::Whole,
    };
    let (status, start, length) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, content.size),
        RangeRequest::Part { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{}", content.size))?,
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{}", content.size))?,
            );
            headers.remove(header::CONTENT_TYPE);
            headers.remove(header::CONTENT_DISPOSITION);
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = file_body(&content, start, length).await?;
    Ok((status, headers, body).into_response())
}

/// `length` bytes of the file from `start`, read as the client takes them.
async fn file_body(content: &Content, start: u64, length: u64) -> Result<Body> {
    let mut file = tokio::fs::File::open(&content.path)
        .await
        .map_err(|e| Error::internal(format!("media file {}: {e}", content.path.display())))?;
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| Error::internal(format!("media file {}: {e}", content.path.display())))?;
    }
    Ok(Body::from_stream(ReaderStream::with_capacity(
        file.take(length),
        READ_CHUNK,
    )))
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    /// Inclusive byte positions.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, or a header that does not parse, get
/// the whole file, which RFC 9110 allows.
fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(size.saturating_sub(1)))),
        (Ok(start), Err(_)) if last.is_empty() => Some((start, size.saturating_sub(1))),
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 {
                return RangeRequest::Unsatisfiable;
            }
            Some((size.saturating_sub(suffix), size.saturating_sub(1)))
        }
        _ => None,
    };
    match parsed {
        None => RangeRequest::Whole,
        Some((start, _)) if start >= size => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Part { start, end },
    }
}

/// The federation form (`multipart/mixed`): a JSON part (`{}`, the metadata), then the file with
/// its type and disposition. Streamed like a plain download.
pub async fn multipart_response(content: Content) -> Result<Response> {
    let boundary: String = hex::encode(rand::random::<[u8; 16]>());
    let disposition =
        content_disposition(content.content_type.as_deref(), content.filename.as_deref());
    let head = format!(
        "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {}\r\nContent-Disposition: {disposition}\r\n\r\n",
        content_type(&content),
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + content.size + tail.len() as u64;
    let file = file_body(&content, 0, content.size)
        .await?
        .into_data_stream();
    let body = stream::once(async move { Ok(Bytes::from(head)) })
        .chain(file)
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header_value(&format!("multipart/mixed; boundary={boundary}"))?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}

/// The size and method of a thumbnail request; `scale` when no method is given.
pub fn thumbnail_request(
    width: ruma::UInt,
    height: ruma::UInt,
    method: Option<&ruma::media::Method>,
) -> Result<ThumbnailRequest> {
    let dimension = |n: ruma::UInt| u32::try_from(u64::from(n)).unwrap_or(u32::MAX);
    let method = match method {
        None | Some(ruma::media::Method::Scale) => ThumbnailMethod::Scale,
        Some(ruma::media::Method::Crop) => ThumbnailMethod::Crop,
        Some(_) => return Err(Error::invalid_param("method must be crop or scale")),
    };
    Ok(ThumbnailRequest {
        width: dimension(width),
        height: dimension(height),
        method,
    })
}

fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|e| Error::internal(format!("header {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Part { start: 0, end: 99 });
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Part { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=9-0", 100), Whole);
    }

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(content_disposition(Some("image/png"), None), "inline");
        assert_eq!(
            content_disposition(Some("text/html"), Some("page.html")),
            "attachment; filename=page.html"
        );
        assert!(content_disposition(Some("image/svg+xml"), None).starts_with("attachment"));
        assert!(content_disposition(None, None).starts_with("attachment"));
        assert_eq!(
            content_disposition(Some("text/plain; charset=utf-8"), Some("naïve.txt")),
            "inline; filename*=utf-8''na%C3%AFve.txt"
        );
    }
}
