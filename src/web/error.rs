//! Errors as the spec's JSON bodies, serialized by ruma.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use http::StatusCode;
use ruma::api::{
    OutgoingResponseExt,
    client::uiaa::UiaaResponse,
    error::{Error as RumaError, ErrorBody, ErrorKind, StandardErrorBody},
};

use crate::error::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let rendered = match self {
            Error::Matrix {
                status,
                kind,
                message,
            } => RumaError::new(
                status,
                ErrorBody::Standard(StandardErrorBody::new(kind, message.into_owned())),
            )
            .try_into_http_response::<BytesMut>(),
            Error::Uiaa(info) => {
                UiaaResponse::AuthResponse(*info).try_into_http_response::<BytesMut>()
            }
            Error::Internal(message) => {
                tracing::error!(%message, "internal error");
                RumaError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::Standard(StandardErrorBody::new(
                        ErrorKind::Unknown,
                        "Internal server error".to_owned(),
                    )),
                )
                .try_into_http_response::<BytesMut>()
            }
        };
        match rendered {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}
