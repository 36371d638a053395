//! The admin API (`POST /admin/v1/<method>`, JSON in and out), for an operator's scripts and
//! the application's own backend: on only when `[http] admin_key` is set, and every call must
//! carry `Authorization: Bearer <admin_key>`. Each method's body names its app.
//!
//! Methods: `info`, `publish`, `broadcast`, `who_now`, `where_now`, `channels`, `disconnect`,
//! `get_metadata`, `set_metadata`, `history` (docs/operators.md, "Admin API").

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rtm_proto::{
    ChannelType, HistoryMessage, MetadataItem, MetadataOp, MetadataOptions, MetadataTarget,
    MetadataWrite, Payload, PublishRequest, StorageData,
};
use serde::{Deserialize, Serialize};

use super::Ops;
use super::actions::History;
use super::api::{ApiError, json_body, matches};
use crate::engine::Inspect;

/// The largest body a call may send.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// Who a backend publishes or writes as when it does not say.
const DEFAULT_AUTHOR: &str = "rtm-admin";

/// The admin routes, for `ops` (whose admin key is set).
pub(crate) fn routes(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/admin/v1/info", post(info))
        .route("/admin/v1/publish", post(publish))
        .route("/admin/v1/broadcast", post(broadcast))
        .route("/admin/v1/who_now", post(who_now))
        .route("/admin/v1/where_now", post(where_now))
        .route("/admin/v1/channels", post(channels))
        .route("/admin/v1/disconnect", post(disconnect))
        .route("/admin/v1/get_metadata", post(get_metadata))
        .route("/admin/v1/set_metadata", post(set_metadata))
        .route("/admin/v1/history", post(history))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ops)
}

/// A call that showed the admin key.
struct Admin;

impl FromRequestParts<Arc<Ops>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ops: &Arc<Ops>) -> Result<Self, ApiError> {
        let unauthorized = |reason: &str| {
            ApiError::http(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", reason.to_owned())
        };
        let Some(expected) = &ops.admin_key else {
            return Err(unauthorized("the admin API is off"));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("send Authorization: Bearer <admin_key>"))?;
        if !matches(given.trim().as_bytes(), expected) {
            return Err(unauthorized("wrong admin key"));
        }
        if ops.admin_rate.check().is_err() {
            return Err(ApiError::http(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "over [http] admin_rate calls per second",
            ));
        }
        Ok(Self)
    }
}

type Body = Result<Bytes, BytesRejection>;
type Answer<T> = Result<Json<T>, ApiError>;

fn body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    json_body(body, BODY_LIMIT)
}

/// A channel type in a body: `message` (the default), `user` or `stream`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Message,
    User,
    Stream,
}

impl From<Kind> for ChannelType {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Message => Self::Message,
            Kind::User => Self::User,
            Kind::Stream => Self::Stream,
        }
    }
}

impl From<ChannelType> for Kind {
    fn from(t: ChannelType) -> Self {
        match t {
            ChannelType::Message => Self::Message,
            ChannelType::User => Self::User,
            ChannelType::Stream => Self::Stream,
        }
    }
}

/// A message in a body: text, or base64 of bytes with `binary`.
fn payload(message: String, binary: bool) -> Result<Payload, ApiError> {
    if !binary {
        return Ok(Payload::Text(message));
    }
    BASE64
        .decode(message.as_bytes())
        .map(|bytes| Payload::Binary(bytes.into()))
        .map_err(|e| {
            ApiError::http(
                StatusCode::BAD_REQUEST,
                "BAD_JSON",
                format!("message is not base64 (binary = true): {e}"),
            )
        })
}

#[derive(Deserialize)]
struct AppOnly {
    app_id: Option<String>,
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    uptime_secs: u64,
    nodes: Vec<NodeOut>,
    apps: Vec<AppOut>,
    connections: u64,
    message_channels: u64,
    stream_channels: u64,
    subscriptions: u64,
}

#[derive(Serialize)]
struct NodeOut {
    node: u32,
    last_beat_ms: u64,
    this_node: bool,
}

#[derive(Serialize)]
struct AppOut {
    app_id: String,
    sessions: u64,
    users: u64,
}

/// `info`: the server (or this node of a cluster): version, uptime, nodes, sessions per app.
async fn info(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Info> {
    let filter: AppOnly = body(raw)?;
    let engine = ops.node.core.inspect();
    let nodes = engine.nodes().await.map_err(|e| {
        ApiError::http(
            StatusCode::SERVICE_UNAVAILABLE,
            "ENGINE_FAILED",
            format!("the node list is not available: {e}"),
        )
    })?;
    let local = engine.local_counts();
    let apps = ops
        .node
        .registry
        .per_app()
        .into_iter()
        .filter(|a| filter.app_id.as_ref().is_none_or(|id| *id == a.app_id))
        .map(|a| AppOut {
            app_id: a.app_id,
            sessions: a.sessions,
            users: a.users,
        })
        .collect();
    let metrics = &ops.node.core.metrics;
    let connections = metrics
        .connections_open
        .get_or_create(&crate::metrics::TransportLabel {
            transport: crate::metrics::Transport::quic,
        })
        .get()
        + [
            crate::metrics::Transport::webtransport,
            crate::metrics::Transport::websocket,
        ]
        .into_iter()
        .map(|transport| {
            metrics
                .connections_open
                .get_or_create(&crate::metrics::TransportLabel { transport })
                .get()
        })
        .sum::<i64>();
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: ops.started.elapsed().as_secs(),
        nodes: nodes
            .into_iter()
            .map(|n| NodeOut {
                node: n.node,
                last_beat_ms: n.last_beat_ms,
                this_node: n.this_node,
            })
            .collect(),
        apps,
        connections: u64::try_from(connections).unwrap_or(0),
        message_channels: local.message_channels,
        stream_channels: local.stream_channels,
        subscriptions: local.subscriptions,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn {
    app_id: String,
    channel: String,
    message: String,
    #[serde(default)]
    binary: bool,
    #[serde(default)]
    channel_type: Kind,
    #[serde(default)]
    custom_type: String,
    publisher: Option<String>,
    #[serde(default)]
    store: bool,
}

#[derive(Serialize)]
struct Published {
    timestamp: u64,
}

/// `publish`: one message to a message channel, or to a user (`channel_type: "user"`).
async fn publish(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Published> {
    let call: PublishIn = body(raw)?;
    let request = PublishRequest {
        channel_type: call.channel_type.into(),
        channel: call.channel,
        message: payload(call.message, call.binary)?,
        custom_type: call.custom_type,
    };
    let publisher = call.publisher.as_deref().unwrap_or(DEFAULT_AUTHOR);
    let timestamp = ops
        .publish(&call.app_id, publisher, request, call.store)
        .await?;
    Ok(Json(Published { timestamp }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastIn {
    app_id: String,
    channels: Vec<String>,
    message: String,
    #[serde(default)]
    binary: bool,
    #[serde(default)]
    custom_type: String,
    publisher: Option<String>,
    #[serde(default)]
    store: bool,
}

/// The most channels one broadcast reaches.
const BROADCAST_MAX: usize = 1000;

#[derive(Serialize)]
struct Broadcast {
    results: Vec<BroadcastResult>,
}

#[derive(Serialize)]
struct BroadcastResult {
    channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut>,
}

#[derive(Serialize)]
struct ErrorOut {
    code: i32,
    name: &'static str,
    reason: String,
}

/// `broadcast`: the same message to several message channels; each channel's outcome.
async fn broadcast(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Broadcast> {
    let call: BroadcastIn = body(raw)?;
    if call.channels.len() > BROADCAST_MAX {
        return Err(ApiError::http(
            StatusCode::BAD_REQUEST,
            "TOO_MANY_CHANNELS",
            format!("a broadcast reaches at most {BROADCAST_MAX} channels"),
        ));
    }
    let message = payload(call.message, call.binary)?;
    let publisher = call.publisher.as_deref().unwrap_or(DEFAULT_AUTHOR);
    let mut results = Vec::with_capacity(call.channels.len());
    for channel in call.channels {
        let request = PublishRequest {
            channel_type: ChannelType::Message,
            channel: channel.clone(),
            message: message.clone(),
            custom_type: call.custom_type.clone(),
        };
        let outcome = ops
            .publish(&call.app_id, publisher, request, call.store)
            .await;
        results.push(match outcome {
            Ok(timestamp) => BroadcastResult {
                channel,
                timestamp: Some(timestamp),
                error: None,
            },
            Err(e) => BroadcastResult {
                channel,
                timestamp: None,
                error: Some(ErrorOut {
                    code: e.code.code(),
                    name: e.code.name(),
                    reason: e.reason,
                }),
            },
        });
    }
    Ok(Json(Broadcast { results }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhoNowIn {
    app_id: String,
    channel: String,
    #[serde(default)]
    channel_type: Kind,
    #[serde(default)]
    include_state: bool,
    /// The `next_page` of the previous answer.
    #[serde(default)]
    page: String,
}

#[derive(Serialize)]
struct WhoNow {
    total: usize,
    users: Vec<UserOut>,
    /// Empty on the last page.
    next_page: String,
}

#[derive(Serialize)]
struct UserOut {
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    states: Option<rtm_proto::StateDetail>,
}

/// `who_now`: a page of a channel's visible users.
async fn who_now(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<WhoNow> {
    let call: WhoNowIn = body(raw)?;
    let after = (!call.page.is_empty()).then_some(call.page.as_str());
    let page = ops
        .who_now(
            &call.app_id,
            (call.channel_type.into(), &call.channel),
            after,
            call.include_state,
        )
        .await?;
    let next_page = match page.users.last() {
        Some(last) if page.more => last.user_id.clone(),
        _ => String::new(),
    };
    Ok(Json(WhoNow {
        total: page.total,
        users: page
            .users
            .into_iter()
            .map(|u| UserOut {
                user_id: u.user_id,
                states: call.include_state.then_some(u.states),
            })
            .collect(),
        next_page,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIn {
    app_id: String,
    user_id: String,
}

#[derive(Serialize)]
struct Channels {
    channels: Vec<ChannelOut>,
}

#[derive(Serialize)]
struct ChannelOut {
    channel: String,
    channel_type: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<u64>,
}

/// `where_now`: the channels where a user is visibly present.
async fn where_now(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Channels> {
    let call: UserIn = body(raw)?;
    let channels = ops.where_now(&call.app_id, &call.user_id).await?;
    Ok(Json(Channels {
        channels: channels
            .into_iter()
            .map(|c| ChannelOut {
                channel: c.channel_name,
                channel_type: c.channel_type.into(),
                sessions: None,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsIn {
    app_id: String,
    #[serde(default = "default_channel_limit")]
    limit: usize,
}

fn default_channel_limit() -> usize {
    100
}

/// `channels`: the app's channels with sessions of this node in them, busiest first, with
/// how many (on a cluster, ask each node).
async fn channels(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Channels> {
    let call: ChannelsIn = body(raw)?;
    ops.policy(&call.app_id)?;
    let listed = ops
        .node
        .core
        .inspect()
        .local_channels(&call.app_id, call.limit.min(10_000));
    Ok(Json(Channels {
        channels: listed
            .into_iter()
            .map(|c| ChannelOut {
                channel: c.channel,
                channel_type: c.channel_type.into(),
                sessions: Some(c.sessions),
            })
            .collect(),
    }))
}

#[derive(Serialize)]
struct Disconnected {
    disconnected: bool,
}

/// `disconnect`: ends a user's session; its client is told it was kicked out and does not
/// come back by itself (it may log in again).
async fn disconnect(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Disconnected> {
    let call: UserIn = body(raw)?;
    let disconnected = ops.disconnect(&call.app_id, &call.user_id).await?;
    Ok(Json(Disconnected { disconnected }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataIn {
    app_id: String,
    /// A channel's set (with `channel_type`), or
    channel: Option<String>,
    #[serde(default)]
    channel_type: Kind,
    /// a user's.
    user_id: Option<String>,
    /// For `set_metadata`: `set` (default), `update` or `remove`.
    #[serde(default)]
    op: Op,
    #[serde(default)]
    items: Vec<ItemIn>,
    #[serde(default = "no_check")]
    major_revision: i64,
    /// Who writes (recorded with each item); `rtm-admin` when absent.
    author: Option<String>,
}

fn no_check() -> i64 {
    -1
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    #[default]
    Set,
    Update,
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemIn {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default = "no_check")]
    revision: i64,
}

#[derive(Serialize)]
struct Metadata {
    major_revision: i64,
    items: Vec<ItemOut>,
}

#[derive(Serialize)]
struct ItemOut {
    key: String,
    value: String,
    revision: i64,
    updated_ms: u64,
    author_user_id: String,
}

impl From<StorageData> for Metadata {
    fn from(data: StorageData) -> Self {
        Self {
            major_revision: data.major_revision,
            items: data
                .items
                .into_iter()
                .map(|i| ItemOut {
                    key: i.key,
                    value: i.value,
                    revision: i.revision,
                    updated_ms: i.updated,
                    author_user_id: i.author_user_id,
                })
                .collect(),
        }
    }
}

fn target(call: &MetadataIn) -> Result<MetadataTarget, ApiError> {
    match (&call.channel, &call.user_id) {
        (Some(channel), None) => Ok(MetadataTarget::Channel {
            channel_type: call.channel_type.into(),
            channel: channel.clone(),
        }),
        (None, Some(user_id)) => Ok(MetadataTarget::User {
            user_id: user_id.clone(),
        }),
        _ => Err(ApiError::http(
            StatusCode::BAD_REQUEST,
            "BAD_JSON",
            "name either a channel or a user_id",
        )),
    }
}

/// `get_metadata`: a channel's or a user's metadata set.
async fn get_metadata(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Metadata> {
    let call: MetadataIn = body(raw)?;
    let data = ops.get_metadata(&call.app_id, target(&call)?).await?;
    Ok(Json(data.into()))
}

/// `set_metadata`: sets, updates or removes items (all or nothing); answers the set after.
async fn set_metadata(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<Metadata> {
    let call: MetadataIn = body(raw)?;
    let write = MetadataWrite {
        op: match call.op {
            Op::Set => MetadataOp::Set,
            Op::Update => MetadataOp::Update,
            Op::Remove => MetadataOp::Remove,
        },
        target: target(&call)?,
        items: call
            .items
            .into_iter()
            .map(|i| MetadataItem {
                key: i.key,
                value: i.value,
                revision: i.revision,
            })
            .collect(),
        options: MetadataOptions {
            major_revision: call.major_revision,
            add_timestamp: true,
            add_user_id: true,
            ..MetadataOptions::default()
        },
    };
    let author = call.author.as_deref().unwrap_or(DEFAULT_AUTHOR);
    let data = ops.write_metadata(&call.app_id, author, write).await?;
    Ok(Json(data.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryIn {
    app_id: String,
    /// A message channel, or with `channel_type: "user"` one of the two users (`user_id` the
    /// other).
    channel: String,
    #[serde(default)]
    channel_type: Kind,
    user_id: Option<String>,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    start: u64,
    #[serde(default)]
    end: u64,
}

#[derive(Serialize)]
pub(crate) struct MessageOut {
    pub(crate) message: String,
    /// `text`, `binary` (base64) or `encrypted` (base64 of the sealed bytes).
    pub(crate) message_type: &'static str,
    pub(crate) custom_type: String,
    pub(crate) publisher: String,
    pub(crate) timestamp: u64,
}

impl From<HistoryMessage> for MessageOut {
    fn from(m: HistoryMessage) -> Self {
        let (message, message_type) = crate::events::encode_payload(m.message);
        Self {
            message,
            message_type,
            custom_type: m.custom_type,
            publisher: m.publisher,
            timestamp: m.timestamp,
        }
    }
}

#[derive(Serialize)]
struct HistoryOut {
    messages: Vec<MessageOut>,
    /// The `start` of the next (older) page; 0 when there is none.
    new_start: u64,
}

/// `history`: a page of a channel's (or two users') history, newest first.
async fn history(_: Admin, State(ops): State<Arc<Ops>>, raw: Body) -> Answer<HistoryOut> {
    let call: HistoryIn = body(raw)?;
    let of = match (call.channel_type, &call.user_id) {
        (Kind::Message, None) => History::Channel(&call.channel),
        (Kind::User, Some(other)) => History::Conversation(&call.channel, other),
        _ => {
            return Err(ApiError::http(
                StatusCode::BAD_REQUEST,
                "BAD_JSON",
                "history is of a message channel, or (channel_type \"user\") of a channel \
                 user and user_id",
            ));
        }
    };
    let page = ops
        .history(&call.app_id, of, (call.count, call.start, call.end))
        .await?;
    Ok(Json(HistoryOut {
        messages: page.messages.into_iter().map(MessageOut::from).collect(),
        new_start: page.new_start,
    }))
}
