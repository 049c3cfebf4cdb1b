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
        Self::Internal(format!("database: {e}"))
    }
}
