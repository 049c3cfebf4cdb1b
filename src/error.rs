//! The one error type of services and handlers: a Matrix error (status, `errcode`, message), a
//! user-interactive-auth challenge, or an internal failure that is logged and shown as a bare 500.

use std::{borrow::Cow, time::Duration};

use http::StatusCode;
use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorKind, LimitExceededErrorData, RetryAfter, UnknownTokenErrorData},
};

#[derive(Debug)]
pub enum Error {
    Matrix {
        status: StatusCode,
        kind: ErrorKind,
        message: Cow<'static, str>,
    },
    /// `401` with the flows a client must complete (user-interactive authentication).
    Uiaa(Box<UiaaInfo>),
    /// A bug or an I/O failure: the details go to the log, the client gets `M_UNKNOWN`.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Matrix {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn unrecognized(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, ErrorKind::Unrecognized, message)
    }

    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown or expired access token",
        )
    }

    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::MissingToken,
            "Missing access token",
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        // Whole milliseconds, rounded up, so a client that waits exactly this long succeeds.
        data.retry_after = Some(RetryAfter::Delay(Duration::from_millis(
            retry_after.as_millis() as u64 + 1,
        )));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too many requests; retry later",
        )
    }

    /// A request body that could not be read: `408` when the client paused longer than
    /// `client_body_timeout` or took longer than `client_body_deadline` (the connection is
    /// closed after it), otherwise `400 M_BAD_JSON`.
    pub fn body_unreadable(what: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorKind::Unknown,
                    format!("{what}: the request body stopped arriving"),
                );
            }
            if e.is::<crate::net::deadline::BodyDeadlineExceeded>() {
                return Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorKind::Unknown,
                    format!("{what}: the request body took too long"),
                );
            }
            cause = e.source();
        }
        Self::bad_json(format!("{what}: {error}"))
    }

    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// `507 Insufficient Storage` (RFC 4918: the server cannot store what the request needs)
    /// when the disk is full, with a message a person can act on; `M_UNKNOWN`, since the
    /// spec's `M_RESOURCE_LIMIT_EXCEEDED` is for limits an administrator imposed and needs an
    /// `admin_contact`. `what` failed; it goes to the log as an error, which names the cause.
    pub fn disk_full(what: impl std::fmt::Display) -> Self {
        tracing::error!(
            "the disk is full: {what}; writes fail until space is freed on the file system of \
             the data directory"
        );
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Unknown,
            "The server's disk is full; ask its administrator to free some space",
        )
    }

    /// An I/O failure doing `what`: [`Error::disk_full`] for a full disk or quota, otherwise
    /// an internal error.
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        if is_disk_full(e) {
            Self::disk_full(format_args!("{what}: {e}"))
        } else {
            Self::internal(format_args!("{what}: {e}"))
        }
    }
}

/// `ENOSPC` or `EDQUOT`.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Matrix {
                status,
                kind,
                message,
            } => write!(f, "{status} {}: {message}", kind.errcode()),
            Self::Uiaa(_) => f.write_str("user-interactive authentication required"),
            Self::Internal(message) => write!(f, "internal error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite reports a write that found no space as SQLITE_FULL.
        match &e {
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == rusqlite::ErrorCode::DiskFull =>
            {
                Self::disk_full(format_args!("database: {e}"))
            }
            _ => Self::Internal(format!("database: {e}")),
        }
    }
}
