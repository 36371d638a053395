//! The Signaling REST API, with Agora's paths and JSON, so that a backend written for Agora
//! only changes its host (`docs/operators.md`, "Signaling REST API"):
//!
//! - `POST /dev/v2/project/{appid}/rtm/users/{user_id}/peer_messages[?wait_for_ack=true]`
//! - `POST /dev/v2/project/{appid}/rtm/users/{user_id}/channel_messages`
//! - `GET /dev/v2/project/{appid}/rtm/vendor/user_events` and `.../channel_events`
//! - `GET /rtm/v2/history/{appid}/userId/{user_id}/channelType/{message|user}/channel/{name}`
//!
//! Callers authenticate with HTTP Basic (`key:secret` from the app's `rest_credentials`), or,
//! for the calls made as a user, `Authorization: agora token=<token>` with that user's login
//! token (apps with an App Certificate). Messaging is limited to 500 calls per second per app
//! and the event queues to 10 reads per second, as the reference does.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::{ChannelType, ErrorCode, Payload, PublishRequest, WireError};
use serde::{Deserialize, Serialize};

use super::Ops;
use super::actions::History;
use super::api::{ApiError, digest, json_body, matches};
use crate::config::ServerConfig;
use crate::core::now_ms;
use crate::events::log::{ChannelEvent, EventLog, UserEvent};

/// The largest body a call may send.
const BODY_LIMIT: usize = 128 * 1024;
/// Messaging calls per second per app (peer and channel messages together).
const MESSAGING_RATE: u32 = 500;
/// Event queue reads per second per app.
const EVENTS_RATE: u32 = 10;

/// One app's REST API: its credentials and rate limits.
pub(crate) struct RestApp {
    /// Keys and the digests of their secrets.
    credentials: Vec<(String, [u8; 32])>,
    certificate: Option<String>,
    messaging: DefaultDirectRateLimiter,
    events: DefaultDirectRateLimiter,
}

/// The apps with REST credentials.
#[derive(Default)]
pub(crate) struct RestApps {
    apps: HashMap<String, RestApp>,
    requests: AtomicU64,
}

fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
    ))
}

impl RestApps {
    /// The apps of `config` that list `rest_credentials`.
    pub(crate) fn from_config(config: &ServerConfig) -> Self {
        let apps = config
            .apps
            .iter()
            .filter(|a| !a.rest_credentials.is_empty())
            .map(|a| {
                let app = RestApp {
                    credentials: a
                        .rest_credentials
                        .iter()
                        .map(|c| (c.key.clone(), digest(c.secret.as_bytes())))
                        .collect(),
                    certificate: a.app_certificate.clone(),
                    messaging: limiter(MESSAGING_RATE),
                    events: limiter(EVENTS_RATE),
                };
                (a.app_id.clone(), app)
            })
            .collect();
        Self {
            apps,
            requests: AtomicU64::new(now_ms() << 16),
        }
    }

    /// Whether any app has the REST API.
    pub(crate) fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    fn request_id(&self) -> String {
        format!("{:016x}", self.requests.fetch_add(1, Ordering::Relaxed))
    }
}

/// The REST routes.
pub(crate) fn routes(ops: Arc<Ops>) -> Router {
    Router::new()
        .route(
            "/dev/v2/project/{appid}/rtm/users/{user_id}/peer_messages",
            post(peer_message),
        )
        .route(
            "/dev/v2/project/{appid}/rtm/users/{user_id}/channel_messages",
            post(channel_message),
        )
        .route(
            "/dev/v2/project/{appid}/rtm/vendor/user_events",
            get(user_events),
        )
        .route(
            "/dev/v2/project/{appid}/rtm/vendor/channel_events",
            get(channel_events),
        )
        .route(
            "/rtm/v2/history/{appid}/userId/{user_id}/channelType/{channel_type}/channel/{channel}",
            get(history),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ops)
}

/// A failed call: `{"result": "failed", "request_id", "code", "reason"}` with its status.
struct Failed {
    status: StatusCode,
    request_id: String,
    code: &'static str,
    reason: String,
}

#[derive(Serialize)]
struct FailedBody<'a> {
    result: &'static str,
    request_id: &'a str,
    code: &'a str,
    reason: &'a str,
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        let body = FailedBody {
            result: "failed",
            request_id: &self.request_id,
            code: self.code,
            reason: &self.reason,
        };
        (self.status, Json(body)).into_response()
    }
}

impl Failed {
    fn from_api(e: ApiError, request_id: String) -> Self {
        Self {
            status: e.status,
            request_id,
            code: e.name,
            reason: e.reason,
        }
    }

    fn new(status: StatusCode, request_id: &str, code: &'static str, reason: &str) -> Self {
        Self {
            status,
            request_id: request_id.to_owned(),
            code,
            reason: reason.to_owned(),
        }
    }
}

/// Who may call: checks the credentials for `app_id`, and when the call is made as `user_id`,
/// a login token of that user is accepted too.
fn authorize<'a>(
    ops: &'a Ops,
    headers: &HeaderMap,
    app_id: &str,
    user_id: Option<&str>,
    request_id: &str,
) -> Result<&'a RestApp, Failed> {
    let unauthorized =
        |reason: &str| Failed::new(StatusCode::UNAUTHORIZED, request_id, "unauthorized", reason);
    // Said the same way for an app without the REST API as for wrong credentials.
    let app = ops
        .rest
        .apps
        .get(app_id)
        .ok_or_else(|| unauthorized("invalid authentication credentials"))?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("invalid authentication credentials"))?;
    if let Some(basic) = given.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthorized("the Basic credentials are not base64 of key:secret"))?;
        let (key, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("the Basic credentials are not key:secret"))?;
        // Every listed secret is compared, whatever the key, so that timing tells nothing.
        let mut found = false;
        for (listed, expected) in &app.credentials {
            found |= matches(secret.as_bytes(), expected) & (listed == key);
        }
        return if found {
            Ok(app)
        } else {
            Err(unauthorized("invalid authentication credentials"))
        };
    }
    if let Some(token) = given.strip_prefix("agora token=") {
        let (Some(user_id), Some(certificate)) = (user_id, &app.certificate) else {
            return Err(unauthorized(
                "token authentication needs a call made as a user, of an app with a certificate",
            ));
        };
        let now = now_ms() / 1000;
        return crate::token::AccessToken::parse(token.trim())
            .and_then(|t| t.verify_login(app_id, certificate, user_id, now))
            .map(|_| app)
            .map_err(|e| unauthorized(&format!("token refused: {}", e.reason)));
    }
    Err(unauthorized("invalid authentication credentials"))
}

fn too_many(request_id: &str, limit: u32) -> Failed {
    Failed::new(
        StatusCode::TOO_MANY_REQUESTS,
        request_id,
        "too_many_requests",
        &format!("more than {limit} calls per second for this app"),
    )
}

/// Reads a JSON body (`Content-Type: application/json`).
fn body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
    request_id: &str,
) -> Result<T, Failed> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return Err(Failed::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            request_id,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    json_body(raw, BODY_LIMIT).map_err(|e| Failed::from_api(e, request_id.to_owned()))
}

/// A call made as `user_id`: checked against the app's credentials and its messaging
/// allowance. Returns the call's request id.
fn messaging_call(
    ops: &Ops,
    headers: &HeaderMap,
    app_id: &str,
    user_id: &str,
) -> Result<String, Failed> {
    let request_id = ops.rest.request_id();
    let app = authorize(ops, headers, app_id, Some(user_id), &request_id)?;
    if app.messaging.check().is_err() {
        return Err(too_many(&request_id, MESSAGING_RATE));
    }
    Ok(request_id)
}

/// The publish of a text `payload` (1 byte at least) to `channel`.
fn message(
    channel_type: ChannelType,
    channel: String,
    payload: String,
    request_id: &str,
) -> Result<PublishRequest, Failed> {
    if payload.is_empty() {
        return Err(Failed::new(
            StatusCode::BAD_REQUEST,
            request_id,
            "invalid_payload",
            "payload is empty",
        ));
    }
    Ok(PublishRequest {
        channel_type,
        channel,
        message: Payload::Text(payload),
        custom_type: String::new(),
    })
}

#[derive(Serialize)]
struct Sent {
    result: &'static str,
    request_id: String,
    code: &'static str,
}

#[derive(Deserialize)]
struct PeerMessage {
    destination: String,
    payload: String,
    /// Deprecated in the reference; rtm keeps no offline messages, and ignores it.
    #[serde(default)]
    #[allow(dead_code)]
    enable_offline_messaging: bool,
    #[serde(default)]
    enable_historical_messaging: bool,
}

#[derive(Deserialize)]
struct AckQuery {
    #[serde(default)]
    wait_for_ack: bool,
}

/// `peer_messages`: a message from `user_id` to `destination` (a user-channel message).
async fn peer_message(
    State(ops): State<Arc<Ops>>,
    Path((app_id, user_id)): Path<(String, String)>,
    Query(ack): Query<AckQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Sent>, Failed> {
    let request_id = messaging_call(&ops, &headers, &app_id, &user_id)?;
    let call: PeerMessage = body(&headers, raw, &request_id)?;
    let request = message(
        ChannelType::User,
        call.destination,
        call.payload,
        &request_id,
    )?;
    let sent = ops
        .publish(&app_id, &user_id, request, call.enable_historical_messaging)
        .await;
    let code = match sent {
        Ok(_) if ack.wait_for_ack => "message_delivered",
        Ok(_) => "message_sent",
        Err(e)
            if matches!(
                e.code,
                ErrorCode::ChannelReceiverOffline
                    | ErrorCode::ChannelReceiverOfflineButStoreSucceeded
            ) =>
        {
            if ack.wait_for_ack {
                "message_offline"
            } else {
                "message_sent"
            }
        }
        Err(e) => return Err(Failed::from_api(e.into(), request_id)),
    };
    Ok(Json(Sent {
        result: "success",
        request_id,
        code,
    }))
}

#[derive(Deserialize)]
struct ChannelMessage {
    channel_name: String,
    payload: String,
    #[serde(default)]
    enable_historical_messaging: bool,
}

/// `channel_messages`: a message from `user_id` to a message channel.
async fn channel_message(
    State(ops): State<Arc<Ops>>,
    Path((app_id, user_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Sent>, Failed> {
    let request_id = messaging_call(&ops, &headers, &app_id, &user_id)?;
    let call: ChannelMessage = body(&headers, raw, &request_id)?;
    let request = message(
        ChannelType::Message,
        call.channel_name,
        call.payload,
        &request_id,
    )?;
    ops.publish(&app_id, &user_id, request, call.enable_historical_messaging)
        .await
        .map_err(|e| Failed::from_api(e.into(), request_id.clone()))?;
    Ok(Json(Sent {
        result: "success",
        request_id,
        code: "message_sent",
    }))
}

#[derive(Serialize)]
struct Events<T> {
    result: &'static str,
    request_id: String,
    events: Vec<T>,
}

/// Checks a call to an event queue and returns the app's queues.
fn event_log(
    ops: &Ops,
    headers: &HeaderMap,
    app_id: &str,
    request_id: &str,
) -> Result<Arc<EventLog>, Failed> {
    let app = authorize(ops, headers, app_id, None, request_id)?;
    if app.events.check().is_err() {
        return Err(too_many(request_id, EVENTS_RATE));
    }
    ops.node.core.events.log(app_id).ok_or_else(|| {
        Failed::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            request_id,
            "internal_error",
            "the app's event queues are missing",
        )
    })
}

/// A queue read: the events taken, oldest first.
fn read_events<T: Serialize>(
    ops: &Ops,
    headers: &HeaderMap,
    app_id: &str,
    take: impl FnOnce(&EventLog) -> Vec<T>,
) -> Result<Json<Events<T>>, Failed> {
    let request_id = ops.rest.request_id();
    let log = event_log(ops, headers, app_id, &request_id)?;
    Ok(Json(Events {
        result: "success",
        request_id,
        events: take(&log),
    }))
}

/// `user_events`: logins and logouts since the last read (on this node), oldest first.
async fn user_events(
    State(ops): State<Arc<Ops>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Events<UserEvent>>, Failed> {
    read_events(&ops, &headers, &app_id, EventLog::take_users)
}

/// `channel_events`: joins and leaves since the last read (on this node), oldest first.
async fn channel_events(
    State(ops): State<Arc<Ops>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Events<ChannelEvent>>, Failed> {
    read_events(&ops, &headers, &app_id, EventLog::take_channels)
}

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    start: u64,
    #[serde(default)]
    end: u64,
    #[serde(default, rename = "messageCount")]
    message_count: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryAnswer {
    error_code: i32,
    error: bool,
    request_id: String,
    operation: &'static str,
    reason: String,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<HistoryData>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryData {
    message_list: Vec<HistoryItem>,
    count: usize,
    new_start: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryItem {
    /// `STRING`, or `BINARY` with `message` in base64.
    message_type: &'static str,
    message: String,
    custom_type: String,
    publisher: String,
    timestamp: u64,
}

/// The history API: a page of a message channel's history, or of `user_id`'s conversation
/// with the user `channel` (`channelType` `user`), newest first.
async fn history(
    State(ops): State<Arc<Ops>>,
    Path((app_id, user_id, channel_type, channel)): Path<(String, String, String, String)>,
    Query(query): Query<HistoryQuery>,
    headers: HeaderMap,
) -> Response {
    // History reads share the messaging allowance.
    let request_id = match messaging_call(&ops, &headers, &app_id, &user_id) {
        Ok(request_id) => request_id,
        Err(failed) => return failed.into_response(),
    };
    let answer = |status: StatusCode, code: i32, reason: String, data| {
        let body = HistoryAnswer {
            error_code: code,
            error: code != 0,
            request_id: request_id.clone(),
            operation: "getMessages",
            reason,
            timestamp: now_ms(),
            data,
        };
        (status, Json(body)).into_response()
    };
    let of = match channel_type.as_str() {
        "message" => History::Channel(&channel),
        "user" => History::Conversation(&user_id, &channel),
        other => {
            let e = WireError::new(
                ErrorCode::InvalidChannelType,
                format!("channelType {other:?}: message or user"),
            );
            return answer(StatusCode::BAD_REQUEST, e.code.code(), e.reason, None);
        }
    };
    let count = query.message_count.min(100);
    match ops
        .history(&app_id, of, (count, query.start, query.end))
        .await
    {
        Ok(page) => {
            let message_list: Vec<HistoryItem> = page
                .messages
                .into_iter()
                .map(|m| {
                    let (message, kind) = crate::events::encode_payload(m.message);
                    HistoryItem {
                        message_type: if kind == "text" { "STRING" } else { "BINARY" },
                        message,
                        custom_type: m.custom_type,
                        publisher: m.publisher,
                        timestamp: m.timestamp,
                    }
                })
                .collect();
            let data = HistoryData {
                count: message_list.len(),
                message_list,
                new_start: page.new_start,
            };
            answer(StatusCode::OK, 0, "success".into(), Some(data))
        }
        Err(e) => {
            let status = ApiError::from(e.clone()).status;
            answer(status, e.code.code(), e.reason, None)
        }
    }
}
