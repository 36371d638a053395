//! What the JSON APIs of the internal listener share: errors with their HTTP status, reading a
//! bounded JSON body, and comparing secrets.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rtm_proto::{ErrorCode, WireError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::core::ENGINE_FAILED;

/// An error answer: an HTTP status and a JSON body
/// `{"error": {"code": -10003, "name": "INVALID_APP_ID", "reason": "..."}}`; `code` and
/// `name` are the client API's error code where one applies, 0 and an HTTP-level name
/// otherwise.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: i32,
    pub(crate) name: &'static str,
    pub(crate) reason: String,
}

impl ApiError {
    /// An HTTP-level error (no client API code).
    pub(crate) fn http(status: StatusCode, name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code: 0,
            name,
            reason: reason.into(),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let status = match e.code {
            ErrorCode::InvalidAppId => StatusCode::NOT_FOUND,
            ErrorCode::ChannelReceiverOffline
            | ErrorCode::ChannelReceiverOfflineButStoreSucceeded => StatusCode::NOT_FOUND,
            ErrorCode::OperationRateExceedLimitation
            | ErrorCode::ChannelPublishMessageTooFrequent => StatusCode::TOO_MANY_REQUESTS,
            _ if e.reason == ENGINE_FAILED => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageOutdatedRevision | ErrorCode::HistoryNotAvailable => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code: e.code.code(),
            name: e.code.name(),
            reason: e.reason,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: i32,
    name: &'a str,
    reason: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                name: self.name,
                reason: &self.reason,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Reads a JSON body of type `T` (at most `limit` bytes, which the router enforces): a body
/// too large is 413, one that is not the JSON expected is 400, each with the reason.
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::http(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body is over {limit} bytes"),
            )
        } else {
            ApiError::http(StatusCode::BAD_REQUEST, "BAD_BODY", rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::http(
            StatusCode::BAD_REQUEST,
            "BAD_JSON",
            format!("the body is not the JSON expected: {e}"),
        )
    })
}

/// The SHA-256 of a secret, kept instead of the secret.
pub(crate) fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether `given` is the secret whose digest is `expected`, in time that does not depend on
/// where they differ.
pub(crate) fn matches(given: &[u8], expected: &[u8; 32]) -> bool {
    let given = digest(given);
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
