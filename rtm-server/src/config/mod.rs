//! Server configuration, read from a TOML file (`rtm-server --config FILE`).
//!
//! Every field has a default, so an empty file (or none at all) gives the embedded defaults:
//! listen on `127.0.0.1:4433`, keep data (and a generated self-signed certificate) in
//! `./rtm-data`, accept any App ID without a token, and apply the reference's limits.
//!
//! ```toml
//! listen = "127.0.0.1:4433"
//! data_dir = "rtm-data"
//! # cert_file = "/etc/rtm/cert.pem"   # both or neither; neither = self-signed in data_dir
//! # key_file = "/etc/rtm/key.pem"
//!
//! [websocket]           # off unless set (on at 127.0.0.1:4434 without a config file)
//! listen = "0.0.0.0:4434"
//! # tls = true          # default: plain ws:// on loopback, wss:// elsewhere
//!
//! [web]
//! allowed_origins = ["https://app.example.com"]   # default: any on loopback, none elsewhere
//!
//! [http]                # health and metrics for operators; on by default, loopback only
//! listen = "127.0.0.1:4435"
//!
//! [engine]              # default: kind = "memory", this node alone
//! kind = "redis"        # several nodes sharing one service through Redis
//! urls = ["redis://127.0.0.1:6379"]   # several: independent shards, same list on every node
//! # node_name = "rtm-1"               # in logs; made up when absent
//! # node_timeout_ms = 15000            # a silent node's users time out after this
//!
//! [limits]              # defaults for every app
//! publish_rate = 60
//!
//! [[apps]]
//! app_id = "970CA35de60c44645bbae8a215061b33"
//! app_certificate = "5CFd2fd1755d40ecb72977518be15d3b"
//! [apps.limits]         # this app only
//! publish_rate = 100
//! ```

mod backend;
mod http;
mod sources;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rtm_proto::{LoginLimits, limits};
use serde::{Deserialize, Serialize};

pub use self::backend::{RestCredential, WebhookConfig};
pub use self::http::{HttpConfig, MIN_ADMIN_KEY_LEN};
pub use self::sources::{DEFAULT_TOML, env_path};
use crate::token::is_hex32;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (UDP).
    pub listen: SocketAddr,
    /// Directory for the server's data; created if missing.
    pub data_dir: PathBuf,
    /// PEM certificate chain. With `key_file`; when both are absent the server uses (and if
    /// needed generates) `cert.pem`/`key.pem` in `data_dir`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Limits for every app, unless the app overrides them.
    pub limits: Limits,
    /// Limits of connections, before any app is known.
    pub connection: ConnectionLimits,
    /// The apps this server serves. Empty: any App ID is accepted, without a token.
    pub apps: Vec<AppConfig>,
    /// How metadata is kept.
    pub storage: StorageConfig,
    /// The WebSocket listener: off unless configured (on at `127.0.0.1:4434` in the embedded
    /// defaults, which apply when there is no configuration file).
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// What browsers may do: WebTransport, and the pages allowed to connect.
    pub web: WebConfig,
    /// Where shared state lives: this process, or Redis for a cluster of nodes.
    pub engine: EngineConfig,
    /// The internal HTTP listener for operators: health and metrics.
    pub http: HttpConfig,
}

/// `[engine]`: where the state that sessions share lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `"memory"` (the default): in this process; metadata and history in SQLite in
    /// `data_dir`. `"redis"`: in Redis, shared by every node that lists the same `urls`.
    pub kind: EngineKind,
    /// The Redis servers (`redis://host:port/`, `rediss://...` for TLS, `redis+unix:///path`),
    /// one per shard; every node lists the same ones in the same order.
    pub urls: Vec<String>,
    /// This node's name in logs; made up when absent.
    pub node_name: Option<String>,
    /// Milliseconds one Redis command may take before the call that made it fails (default
    /// 2000).
    pub command_timeout_ms: Option<u32>,
    /// Milliseconds after a node's last heartbeat at which the others declare it dead and
    /// time its users out (default 15000; docs/operators.md).
    pub node_timeout_ms: Option<u32>,
}

/// The `kind` of engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One node, state in memory (and SQLite).
    #[default]
    Memory,
    /// Many nodes, state in Redis.
    Redis,
}

/// `[websocket]`: a TCP listener for WebSocket clients (`docs/protocol.md` §1.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Address to listen on (TCP); absent: no WebSocket listener.
    pub listen: Option<SocketAddr>,
    /// TLS (`wss://`) with the server's certificate. Absent: plain `ws://` on a loopback
    /// address (development), TLS anywhere else.
    pub tls: Option<bool>,
}

impl WebSocketConfig {
    /// The embedded defaults' listener: `127.0.0.1:4434`, next to the QUIC port.
    pub fn dev() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 4434))),
            tls: None,
        }
    }

    /// Whether the listener speaks TLS.
    pub fn uses_tls(&self) -> bool {
        match (self.tls, self.listen) {
            (Some(tls), _) => tls,
            (None, Some(addr)) => !addr.ip().is_loopback(),
            (None, None) => false,
        }
    }
}

/// `[web]`: browsers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Accept WebTransport (ALPN `h3`) on the QUIC port (default true).
    pub webtransport: bool,
    /// Origins (`https://app.example.com`) whose pages may open a session over WebSocket or
    /// WebTransport; `"*"` allows any. Absent: any page when the listener is on a loopback
    /// address, none otherwise. Clients that are not browsers send no origin and are not
    /// concerned.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            webtransport: true,
            allowed_origins: None,
        }
    }
}

/// How metadata is kept (in `metadata.sqlite3` in the data directory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"full"` (the default): a write is acknowledged once it is on disk, so that not even a
    /// power cut loses it. `"normal"`: once the operating system has it; a crash of the server
    /// process loses nothing, a power cut may lose the last writes.
    pub durability: DurabilitySetting,
}

/// The `durability` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// Synced to disk before the answer.
    #[default]
    Full,
    /// Handed to the operating system before the answer.
    Normal,
}

impl From<DurabilitySetting> for crate::engine::Durability {
    fn from(d: DurabilitySetting) -> Self {
        match d {
            DurabilitySetting::Full => Self::Full,
            DurabilitySetting::Normal => Self::Normal,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("rtm-data"),
            cert_file: None,
            key_file: None,
            limits: Limits::default(),
            connection: ConnectionLimits::default(),
            apps: Vec::new(),
            storage: StorageConfig::default(),
            websocket: WebSocketConfig::dev(),
            web: WebConfig::default(),
            engine: EngineConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// Limits that apply per app (`reference/extended-api.md` §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message payload, in bytes (reference: 32 KB; error -11010).
    pub max_message_size: u32,
    /// Most message channels one client subscribes to (reference: 50; error -11005).
    pub max_subscriptions: u32,
    /// Messages one client may publish per second (reference: 60; error -11025).
    pub publish_rate: u32,
    /// Topic messages one client may publish per second in one topic (reference: 200; error
    /// -11025).
    pub topic_publish_rate: u32,
    /// Most users in one stream channel (reference: 1000; error -11007).
    pub stream_channel_users: u32,
    /// Above this many present users a channel's presence events are batched into one
    /// `INTERVAL` event per `presence_interval_secs` (reference: 50, 8–128).
    pub presence_announce_max: u32,
    /// Seconds between a busy channel's `INTERVAL` events (reference: 30, 5–300).
    pub presence_interval_secs: u32,
    /// Users per page of `who_now` (reference: 100; 1–1000).
    pub presence_page_size: u32,
    /// Milliseconds a leave waits before it is announced; a user back within them causes
    /// neither a leave nor a join event (reference: 2 000; 0 turns it off; at most 10 000).
    pub presence_debounce_ms: u32,
    /// Metadata calls one client may make per second, twice as many in a burst (reference:
    /// 10/s, 20/s at most; error -10021).
    pub storage_rate: u32,
    /// Lock calls one client may make per second, twice as many in a burst (reference: 10/s
    /// for `acquire_lock`; error -10021).
    pub lock_rate: u32,
    /// Messages kept in each channel's history (and each pair of users' history); 0 (the
    /// default) turns history off for the app (`store_in_history` and `get_messages` fail with
    /// -15005).
    pub history_max_messages: u32,
    /// Seconds a stored message is kept; 0 keeps it until `history_max_messages` newer ones
    /// push it out (default 7 days).
    pub history_max_age_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: limits::MAX_MESSAGE_SIZE as u32,
            max_subscriptions: limits::MAX_SUBSCRIPTIONS as u32,
            publish_rate: limits::PUBLISH_RATE,
            topic_publish_rate: limits::TOPIC_PUBLISH_RATE,
            stream_channel_users: limits::MAX_STREAM_CHANNEL_USERS as u32,
            presence_announce_max: 50,
            presence_interval_secs: 30,
            presence_page_size: 100,
            presence_debounce_ms: 2000,
            storage_rate: limits::STORAGE_RATE,
            lock_rate: limits::LOCK_RATE,
            history_max_messages: 0,
            history_max_age_secs: 7 * 24 * 3600,
        }
    }
}

/// Per-app overrides of [`Limits`]; what is absent comes from the server-wide `[limits]`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverrides {
    /// See [`Limits::max_message_size`].
    pub max_message_size: Option<u32>,
    /// See [`Limits::max_subscriptions`].
    pub max_subscriptions: Option<u32>,
    /// See [`Limits::publish_rate`].
    pub publish_rate: Option<u32>,
    /// See [`Limits::topic_publish_rate`].
    pub topic_publish_rate: Option<u32>,
    /// See [`Limits::stream_channel_users`].
    pub stream_channel_users: Option<u32>,
    /// See [`Limits::presence_announce_max`].
    pub presence_announce_max: Option<u32>,
    /// See [`Limits::presence_interval_secs`].
    pub presence_interval_secs: Option<u32>,
    /// See [`Limits::presence_page_size`].
    pub presence_page_size: Option<u32>,
    /// See [`Limits::presence_debounce_ms`].
    pub presence_debounce_ms: Option<u32>,
    /// See [`Limits::storage_rate`].
    pub storage_rate: Option<u32>,
    /// See [`Limits::lock_rate`].
    pub lock_rate: Option<u32>,
    /// See [`Limits::history_max_messages`].
    pub history_max_messages: Option<u32>,
    /// See [`Limits::history_max_age_secs`].
    pub history_max_age_secs: Option<u64>,
}

impl LimitOverrides {
    fn over(self, base: Limits) -> Limits {
        Limits {
            max_message_size: self.max_message_size.unwrap_or(base.max_message_size),
            max_subscriptions: self.max_subscriptions.unwrap_or(base.max_subscriptions),
            publish_rate: self.publish_rate.unwrap_or(base.publish_rate),
            topic_publish_rate: self.topic_publish_rate.unwrap_or(base.topic_publish_rate),
            stream_channel_users: self
                .stream_channel_users
                .unwrap_or(base.stream_channel_users),
            presence_announce_max: self
                .presence_announce_max
                .unwrap_or(base.presence_announce_max),
            presence_interval_secs: self
                .presence_interval_secs
                .unwrap_or(base.presence_interval_secs),
            presence_page_size: self.presence_page_size.unwrap_or(base.presence_page_size),
            presence_debounce_ms: self
                .presence_debounce_ms
                .unwrap_or(base.presence_debounce_ms),
            storage_rate: self.storage_rate.unwrap_or(base.storage_rate),
            lock_rate: self.lock_rate.unwrap_or(base.lock_rate),
            history_max_messages: self
                .history_max_messages
                .unwrap_or(base.history_max_messages),
            history_max_age_secs: self
                .history_max_age_secs
                .unwrap_or(base.history_max_age_secs),
        }
    }
}

/// Limits of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Largest frame body accepted from a client, in bytes. Must leave room for the largest
    /// message plus its envelope; larger frames are refused with a typed error and skipped.
    pub max_frame_len: u32,
    /// Frames a connection's outbound queue holds before the connection counts as a slow
    /// consumer and is closed.
    pub outbound_queue: u32,
    /// Seconds a new connection has to log in.
    pub login_timeout_secs: u32,
    /// Seconds before a login token expires at which the client is warned
    /// (`TokenPrivilegeWillExpire`; the reference's 30).
    pub token_warning_secs: u32,
    /// Delivery streams ("lanes") per connection: 1, 2, 4, 8 or 16 (`docs/protocol.md` §1.2). Each
    /// channel's events travel on one lane, so a packet lost on one lane does not hold up the
    /// channels of the others. 1 puts everything on one stream.
    pub delivery_lanes: u8,
    /// How long clients may hold back acknowledgements, in milliseconds (QUIC ACK-frequency;
    /// they also acknowledge every 10th packet), 1 to 25. Higher saves packets and server CPU at
    /// high fan-out; lower recovers lost packets sooner on lossy links (docs/performance.md).
    pub client_ack_delay_ms: u32,
    /// QUIC path MTU discovery: packets grow from 1 200 bytes to what the path carries (up to
    /// 1 452). Off, every packet stays at 1 200 bytes: about 1.3 KiB less memory per
    /// connection, and more packets for messages and bursts larger than that
    /// (docs/performance.md).
    pub mtu_discovery: bool,
    /// Most bytes of events one session may hold on the server: queued for its connection,
    /// plus sent and not yet acknowledged (kept for a resume). Beyond it the session is closed
    /// as a slow consumer (docs/operators.md). At least 4 MiB.
    pub max_session_bytes: u64,
    /// Most connections the server holds at once, logged in or not; more are refused during
    /// the handshake (QUIC `CONNECTION_REFUSED`).
    pub max_connections: u32,
    /// Most connections from one IP address at once.
    pub max_connections_per_address: u32,
    /// New connections per second (with bursts of as many) that the server accepts without
    /// checking the source address; beyond it every new client must first prove its address
    /// with a QUIC Retry (one more round trip), so that spoofed sources cannot make the server
    /// do handshakes.
    pub handshake_rate: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_frame_len: limits::MAX_FRAME_LEN as u32,
            outbound_queue: 4096,
            login_timeout_secs: 10,
            token_warning_secs: 30,
            delivery_lanes: 16,
            client_ack_delay_ms: 5,
            mtu_discovery: true,
            max_session_bytes: 64 << 20,
            max_connections: 100_000,
            max_connections_per_address: 1_000,
            handshake_rate: 1_000,
        }
    }
}

/// The least `max_session_bytes`: room for a few of the largest frames.
const MIN_SESSION_BYTES: u64 = 4 << 20;

/// One app.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The App ID.
    pub app_id: String,
    /// The App Certificate: when set, logins need a token signed with it. 32 hexadecimal
    /// characters, and the App ID must then be 32 hexadecimal characters too (what the token
    /// builders accept).
    #[serde(default)]
    pub app_certificate: Option<String>,
    /// Overrides of the server-wide limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Where the app's events go (`[apps.webhook]`); none by default.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Who may call the Signaling REST API for this app (HTTP Basic); nobody by default.
    #[serde(default)]
    pub rest_credentials: Vec<RestCredential>,
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that TOML types alone cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad("cert_file and key_file go together: set both or neither".into());
        }
        if self
            .http
            .admin_key
            .as_ref()
            .is_some_and(|key| key.chars().count() < MIN_ADMIN_KEY_LEN)
        {
            return bad(format!(
                "[http] admin_key must have at least {} characters",
                MIN_ADMIN_KEY_LEN
            ));
        }
        if self.http.admin_rate == 0 {
            return bad("[http] admin_rate must be above 0".into());
        }
        match self.engine.kind {
            EngineKind::Redis if self.engine.urls.is_empty() => {
                return bad("[engine] kind = \"redis\" needs urls, one per Redis server".into());
            }
            EngineKind::Memory if !self.engine.urls.is_empty() => {
                return bad("[engine] urls are for kind = \"redis\"".into());
            }
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        for app in &self.apps {
            if let Err(e) = rtm_proto::validate::app_id(&app.app_id) {
                return bad(e.to_string());
            }
            if !seen.insert(app.app_id.as_str()) {
                return bad(format!("App ID {} is listed twice", app.app_id));
            }
            if let Some(certificate) = &app.app_certificate {
                // An empty or short certificate would make tokens anyone can sign; a token
                // builder refuses both it and an App ID not of this form.
                if !is_hex32(certificate) {
                    return bad(format!(
                        "app {}: app_certificate must be 32 hexadecimal characters (it signs \
                         every token; leave it out for an app without tokens)",
                        app.app_id
                    ));
                }
                if !is_hex32(&app.app_id) {
                    return bad(format!(
                        "app {}: an app with an app_certificate needs an App ID of 32 \
                         hexadecimal characters, as the token builders require",
                        app.app_id
                    ));
                }
            }
            check_limits(
                &format!("app {}", app.app_id),
                app.limits.over(self.limits),
                self,
            )?;
            backend::check(app)
                .map_err(|e| ConfigError::Invalid(format!("app {}: {e}", app.app_id)))?;
        }
        check_limits("[limits]", self.limits, self)?;
        let c = self.connection;
        if c.outbound_queue == 0 || c.login_timeout_secs == 0 {
            return bad("connection.outbound_queue and login_timeout_secs must be above 0".into());
        }
        if c.max_frame_len < 1024 || c.max_frame_len as usize > limits::MAX_SERVER_FRAME_LEN {
            return bad(format!(
                "connection.max_frame_len must be between 1024 and {} bytes",
                limits::MAX_SERVER_FRAME_LEN
            ));
        }
        if c.max_session_bytes < MIN_SESSION_BYTES {
            return bad(format!(
                "connection.max_session_bytes must be at least {MIN_SESSION_BYTES} (4 MiB)"
            ));
        }
        if c.max_connections == 0 || c.max_connections_per_address == 0 || c.handshake_rate == 0 {
            return bad(
                "connection.max_connections, max_connections_per_address and handshake_rate \
                 must be above 0"
                    .into(),
            );
        }
        if !(1..=25).contains(&c.client_ack_delay_ms) {
            return bad("connection.client_ack_delay_ms must be between 1 and 25".into());
        }
        if !c.delivery_lanes.is_power_of_two() || usize::from(c.delivery_lanes) > limits::MAX_LANES
        {
            return bad(format!(
                "connection.delivery_lanes must be 1, 2, 4, 8 or {}",
                limits::MAX_LANES
            ));
        }
        Ok(())
    }

    /// The apps, resolved for lookups at login.
    pub(crate) fn apps(&self) -> Apps {
        let known = self
            .apps
            .iter()
            .map(|a| {
                let policy = AppPolicy {
                    certificate: a.app_certificate.clone(),
                    limits: a.limits.over(self.limits),
                };
                (a.app_id.clone(), Arc::new(policy))
            })
            .collect();
        Apps {
            open: self.apps.is_empty(),
            known,
            default: Arc::new(AppPolicy {
                certificate: None,
                limits: self.limits,
            }),
        }
    }
}

fn check_limits(what: &str, l: Limits, config: &ServerConfig) -> Result<(), ConfigError> {
    if l.max_message_size == 0
        || l.max_subscriptions == 0
        || l.publish_rate == 0
        || l.topic_publish_rate == 0
        || l.stream_channel_users == 0
        || l.storage_rate == 0
        || l.lock_rate == 0
    {
        return Err(ConfigError::Invalid(format!(
            "{what}: limits must be above 0"
        )));
    }
    if !(8..=128).contains(&l.presence_announce_max)
        || !(5..=300).contains(&l.presence_interval_secs)
        || !(1..=1000).contains(&l.presence_page_size)
        || l.presence_debounce_ms > 10_000
    {
        return Err(ConfigError::Invalid(format!(
            "{what}: presence_announce_max must be 8–128, presence_interval_secs 5–300 (the \
             reference's ranges), presence_page_size 1–1000 and presence_debounce_ms at most 10000"
        )));
    }
    // The envelope of a publish adds the channel name, custom type and a few bytes.
    let needed = l.max_message_size as u64 + 256;
    if needed > config.connection.max_frame_len as u64 {
        return Err(ConfigError::Invalid(format!(
            "{what}: max_message_size {} does not fit in connection.max_frame_len {} \
             (leave at least 256 bytes for the envelope)",
            l.max_message_size, config.connection.max_frame_len
        )));
    }
    Ok(())
}

/// What the server knows of an app.
#[derive(Debug)]
pub(crate) struct AppPolicy {
    pub(crate) certificate: Option<String>,
    pub(crate) limits: Limits,
}

impl AppPolicy {
    pub(crate) fn login_limits(&self, max_frame_len: u32) -> LoginLimits {
        LoginLimits {
            max_message_size: self.limits.max_message_size,
            max_subscriptions: self.limits.max_subscriptions,
            publish_rate: self.limits.publish_rate,
            max_frame_len,
        }
    }
}

/// The apps, by App ID.
#[derive(Debug)]
pub(crate) struct Apps {
    /// No apps configured: every App ID is served with the default policy.
    pub(crate) open: bool,
    known: HashMap<String, Arc<AppPolicy>>,
    default: Arc<AppPolicy>,
}

impl Apps {
    pub(crate) fn get(&self, app_id: &str) -> Option<Arc<AppPolicy>> {
        match self.known.get(app_id) {
            Some(p) => Some(p.clone()),
            None if self.open => Some(self.default.clone()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests;
