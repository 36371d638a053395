//! Run an rtm server and its clients in one process, for end-to-end tests and benches.
//!
//! ```no_run
//! use rtm_testkit::{TestServer, expect_message};
//! use rtm_client::{PublishOptions, SubscribeOptions};
//!
//! # async fn demo() {
//! let server = TestServer::start().await;
//! let (alice, mut alice_events) = server.login("alice").await;
//! alice.subscribe("room", SubscribeOptions::default()).await.unwrap();
//! alice.publish("room", "hi", PublishOptions::default()).await.unwrap();
//! let message = expect_message(&mut alice_events).await;
//! assert_eq!(message.publisher, "alice");
//! # }
//! ```
//!
//! Every [`TestServer`] listens on a free port of `127.0.0.1` with its own self-signed
//! certificate in a temporary directory, and shuts down when dropped. Tests wait for events with
//! [`expect_event`], which fails the test after a deadline instead of sleeping.
#![warn(missing_docs)]

mod cluster;
pub mod http;
mod link;
mod redis;
mod tcp_relay;

pub use cluster::TestCluster;
pub use link::LossyLink;
pub use redis::RedisServer;
pub use tcp_relay::TcpRelay;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rtm_client::{
    Endpoint, EventStream, LoginOptions, MessageEvent, QuicSocket, RtmClient, RtmConfig, RtmEvent,
    Transport, Trust,
};
use rtm_server::config::ServerConfig;
use rtm_server::{Metrics, Server, ServerHandle};

/// The App ID the test kit's clients use unless told otherwise.
pub const TEST_APP_ID: &str = "testapp";

/// How long [`expect_event`] waits before failing the test. Generous, because CI machines are
/// slow and shared; a passing test never waits for it.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// Sets up logging for tests once (`RUST_LOG` picks the level; output goes through the test
/// harness's capture).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// The transports a test client can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestTransport {
    /// Native QUIC (the default).
    Quic,
    /// WebTransport over HTTP/3.
    WebTransport,
    /// WebSocket over TCP.
    WebSocket,
}

impl TestTransport {
    /// All three.
    pub const ALL: [Self; 3] = [Self::Quic, Self::WebTransport, Self::WebSocket];
}

/// The transport the test kit's clients use: `RTM_TEST_TRANSPORT` (`quic`, `webtransport` or
/// `websocket`), native QUIC when unset, so that the whole end-to-end suite can run over each
/// (`scripts/test` runs the session-level tests over all three).
pub fn test_transport() -> TestTransport {
    match std::env::var("RTM_TEST_TRANSPORT").as_deref() {
        Ok("websocket" | "ws") => TestTransport::WebSocket,
        Ok("webtransport" | "wt") => TestTransport::WebTransport,
        Ok("quic" | "") | Err(_) => TestTransport::Quic,
        Ok(other) => panic!("RTM_TEST_TRANSPORT={other}: expected quic, webtransport or websocket"),
    }
}

/// The engine a [`TestServer`] runs: `RTM_TEST_ENGINE` (`memory` or `redis`), memory when
/// unset. With `redis`, each test server gets its own `redis-server` (see [`RedisServer`]), so
/// that the whole end-to-end suite checks the Redis engine against the same expectations as the
/// in-memory one (`scripts/test` runs the session-level tests both ways).
pub fn test_engine() -> rtm_server::config::EngineKind {
    use rtm_server::config::EngineKind;
    match std::env::var("RTM_TEST_ENGINE").as_deref() {
        Ok("redis") => EngineKind::Redis,
        Ok("memory" | "") | Err(_) => EngineKind::Memory,
        Ok(other) => panic!("RTM_TEST_ENGINE={other}: expected memory or redis"),
    }
}

/// The bytes of a SHA-256 in hexadecimal.
fn hash_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a hexadecimal hash");
    }
    out
}

/// A server on a free loopback port, with its own certificate, stopped on drop.
#[derive(Debug)]
pub struct TestServer {
    handle: Option<ServerHandle>,
    addr: SocketAddr,
    cert_path: PathBuf,
    socket: QuicSocket,
    websocket: Option<rtm_server::WebSocketAddr>,
    config: ServerConfig,
    /// The server's own Redis, when [`test_engine`] asks for the Redis engine.
    redis: Option<RedisServer>,
    /// The server's own runtime, for a server that can be killed ([`TestServer::kill`]).
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A runtime may not be dropped where it could block (in the test's runtime).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A stalled server ([`TestServer::stall`]); dropping it lets the server go on.
#[derive(Debug)]
pub struct Stall {
    _release: std::sync::mpsc::Sender<()>,
}

/// Starts a server with `config` on a free loopback port (and WebSocket port, if it has one),
/// keeping its data in `data_dir`; returns it with the configuration it runs.
async fn launch(mut config: ServerConfig, data_dir: PathBuf) -> (ServerHandle, ServerConfig) {
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    if config.websocket.listen.is_some() {
        config.websocket.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if config.http.enabled {
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    config.data_dir = data_dir;
    let handle = Server::builder()
        .config(config.clone())
        .start()
        .await
        .expect("starting the server");
    (handle, config)
}

impl TestServer {
    /// A server with the test kit's configuration: the reference's limits, except publish
    /// rates (channels and topics) of 100 000 messages per second and metadata and lock call
    /// rates of 10 000 per second, so that tests can send bursts, and no per-address
    /// connection cap (every test client comes from 127.0.0.1).
    pub async fn start() -> Self {
        Self::start_with(Self::config()).await
    }

    /// The configuration [`TestServer::start`] uses, to adjust and pass to
    /// [`TestServer::start_with`].
    pub fn config() -> ServerConfig {
        let mut config = ServerConfig::default();
        config.limits.publish_rate = 100_000;
        config.limits.topic_publish_rate = 100_000;
        config.limits.storage_rate = 10_000;
        config.limits.lock_rate = 10_000;
        // Every test client comes from 127.0.0.1.
        config.connection.max_connections_per_address = 100_000;
        config
    }

    /// A server with `config`; its listen address and data directory are replaced by a free
    /// loopback port and a temporary directory.
    pub async fn start_with(config: ServerConfig) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        Self::start_in(config, dir).await
    }

    /// A server with `config` in a runtime of its own (one worker thread), so that it can be
    /// killed: [`TestServer::kill`].
    pub async fn start_killable(config: ServerConfig) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rtm-node")
            .enable_all()
            .build()
            .expect("a runtime for the node");
        let (handle, config) = runtime
            .spawn(launch(config, dir.path().to_owned()))
            .await
            .expect("starting the node");
        let mut server = Self::assemble(handle, config, None, dir);
        server.runtime = Some(runtime);
        server
    }

    /// Kills a server started with [`TestServer::start_killable`], as a crash would: its
    /// runtime stops at once, every task of the server is dropped where it was, nothing is
    /// closed or cleaned up, and its clients hear nothing more.
    pub fn kill(mut self) {
        let runtime = self
            .runtime
            .take()
            .expect("only a server started with start_killable can be killed");
        runtime.shutdown_background();
        // What is left (the handle) belongs to the dead runtime: dropped without a shutdown.
        std::mem::forget(self.handle.take());
    }

    /// Stalls a server started with [`TestServer::start_killable`] until the returned guard
    /// is dropped: its one worker thread is blocked, as on an overloaded machine, so it handles
    /// nothing meanwhile (then it catches up).
    pub fn stall(&self) -> Stall {
        let runtime = self
            .runtime
            .as_ref()
            .expect("only a server started with start_killable can be stalled");
        let (release, released) = std::sync::mpsc::channel::<()>();
        runtime.spawn(async move {
            // Blocks the worker until the guard goes (the sender is dropped).
            let _ = released.recv();
        });
        Stall { _release: release }
    }

    /// Stops this server and starts a new one with the same configuration on the same data
    /// directory (so with its metadata and certificate), on a new port. Clients of the old
    /// server have to be made again.
    pub async fn restart(mut self) -> Self {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        let config = self.config.clone();
        let redis = self.redis.take();
        // The data directory goes on; an empty one takes its place in what is dropped here.
        let placeholder = tempfile::tempdir().expect("creating a temporary directory");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        Self::start_in_with(config, dir, redis).await
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn start_in(config: ServerConfig, dir: tempfile::TempDir) -> Self {
        let redis = (config.engine.kind == rtm_server::config::EngineKind::Memory
            && test_engine() == rtm_server::config::EngineKind::Redis)
            .then(RedisServer::start);
        Self::start_in_with(config, dir, redis).await
    }

    async fn start_in_with(
        mut config: ServerConfig,
        dir: tempfile::TempDir,
        redis: Option<RedisServer>,
    ) -> Self {
        if let Some(redis) = &redis {
            config.engine.kind = rtm_server::config::EngineKind::Redis;
            config.engine.urls = vec![redis.url()];
            // The suites' bursts (20 000 publishes queued at once) on a busy CI machine can
            // keep a command waiting past the 2 s default; a timeout there fails a publish and
            // the test waits for a message that was never sent (seen once in CI).
            config.engine.command_timeout_ms.get_or_insert(10_000);
        }
        let (handle, config) = launch(config, dir.path().to_owned()).await;
        Self::assemble(handle, config, redis, dir)
    }

    fn assemble(
        handle: ServerHandle,
        config: ServerConfig,
        redis: Option<RedisServer>,
        dir: tempfile::TempDir,
    ) -> Self {
        let addr = handle.local_addr();
        let cert_path = handle.cert().cert_path.clone();
        let socket = QuicSocket::bind(addr).expect("binding the clients' socket");
        let websocket = handle.websocket_addr();
        Self {
            handle: Some(handle),
            addr,
            cert_path,
            socket,
            websocket,
            config,
            redis,
            runtime: None,
            dir,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's certificate (PEM).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.handle().metrics().clone()
    }

    fn handle(&self) -> &ServerHandle {
        self.handle
            .as_ref()
            .expect("the server is running until dropped")
    }

    /// The server's internal HTTP listener (health, metrics), on a free loopback port; panics
    /// if the configuration turned it off.
    pub fn http_addr(&self) -> SocketAddr {
        self.handle()
            .http_addr()
            .expect("the server has its internal HTTP listener")
    }

    /// The server's WebSocket listener (the test kit's servers have one unless their
    /// configuration turns it off).
    pub fn websocket_addr(&self) -> Option<rtm_server::WebSocketAddr> {
        self.websocket
    }

    /// The server's WebTransport URL and the hash of its certificate.
    pub fn webtransport(&self) -> Option<(String, String)> {
        let handle = self.handle();
        Some((handle.webtransport_url()?, handle.webtransport_cert_hash()?))
    }

    /// A client configuration for this server: pinned certificate, the test kit's shared UDP
    /// socket, and the transport of [`test_transport`].
    pub fn client_config(&self) -> RtmConfig {
        self.client_config_over(test_transport())
    }

    /// A client configuration for this server over `transport` (`quic`, `webtransport` or
    /// `websocket`).
    pub fn client_config_over(&self, transport: TestTransport) -> RtmConfig {
        let mut config = RtmConfig::new(Endpoint {
            addr: self.addr,
            server_name: "localhost".into(),
            trust: Trust::pinned(&self.cert_path),
        });
        config.socket = Some(self.socket.clone());
        config.transport = match transport {
            TestTransport::Quic => Transport::Quic,
            TestTransport::WebTransport => {
                // The short-lived certificate WebTransport clients get, pinned by its hash.
                if let Some((_, hash)) = self.webtransport() {
                    config.endpoint.trust = Trust::CertificateHashes(vec![hash_bytes(&hash)]);
                }
                Transport::WebTransport
            }
            TestTransport::WebSocket => {
                let ws = self.websocket.expect("the server has a WebSocket listener");
                Transport::WebSocket {
                    addr: ws.addr,
                    tls: ws.tls,
                }
            }
        };
        config
    }

    /// A client configuration that reaches this server through `link`.
    pub fn client_config_via(&self, link: &LossyLink) -> RtmConfig {
        // The relay forwards UDP: native QUIC, or WebTransport when the suite runs over it.
        let transport = match test_transport() {
            TestTransport::WebTransport => TestTransport::WebTransport,
            TestTransport::Quic | TestTransport::WebSocket => TestTransport::Quic,
        };
        let mut config = self.client_config_over(transport);
        config.endpoint.addr = link.addr();
        // Its own socket: the relay tells clients apart by address.
        config.socket = None;
        config
    }

    /// A client of [`TEST_APP_ID`] for `user_id`, not logged in.
    pub fn client(&self, user_id: &str) -> RtmClient {
        RtmClient::new(TEST_APP_ID, user_id, self.client_config()).expect("a valid test user id")
    }

    /// A logged-in client for `user_id`, and a stream of its events opened before the login.
    pub async fn login(&self, user_id: &str) -> (RtmClient, EventStream) {
        let client = self.client(user_id);
        let events = client.events();
        client.login(LoginOptions::default()).await.expect("login");
        (client, events)
    }

    /// A bare QUIC connection to the server (TLS and ALPN only), for tests of broken peers.
    pub async fn raw_connection(&self) -> quinn::Connection {
        rtm_client::raw::connect(&self.client_config_over(TestTransport::Quic))
            .await
            .expect("raw QUIC connection")
    }

    /// Stops the server and waits for its connections to close.
    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

/// Waits until `events` yields an event that `pick` accepts, and returns what `pick` made of it.
/// Events that `pick` rejects are skipped. Panics after [`EVENT_DEADLINE`] with `what` in the
/// message.
pub async fn expect_event<T>(
    events: &mut EventStream,
    what: &str,
    mut pick: impl FnMut(RtmEvent) -> Option<T>,
) -> T {
    let wait = async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(event) {
                return found;
            }
        }
        panic!("the event stream ended while waiting for {what}");
    };
    within(EVENT_DEADLINE, what, wait).await
}

/// Waits for the next message event.
pub async fn expect_message(events: &mut EventStream) -> MessageEvent {
    expect_event(events, "a message", |e| match e {
        RtmEvent::Message(m) => Some(m),
        _ => None,
    })
    .await
}

/// Waits for the link to reach `state`, and returns that link-state event.
pub async fn expect_link_state(
    events: &mut EventStream,
    state: rtm_client::LinkState,
) -> rtm_client::LinkStateEvent {
    expect_event(events, &format!("the {state:?} link state"), |e| match e {
        RtmEvent::LinkState(s) if s.current_state == state => Some(s),
        _ => None,
    })
    .await
}

/// Waits until `condition` holds (checked every 20 ms), panicking with `what` after
/// `deadline`. For state that has no event to wait on, such as the server's counters.
pub async fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let check = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !condition() {
            tick.tick().await;
        }
    };
    within(deadline, what, check).await;
}

/// Runs `fut`, panicking with `what` if it takes longer than `deadline`.
pub async fn within<T>(deadline: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// A hand-driven control stream on a bare connection: send any bytes, read what the server
/// answers. For tests of what a broken or hostile client can do.
#[derive(Debug)]
pub struct RawSession {
    /// The connection.
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: bytes::BytesMut,
    decoder: rtm_proto::FrameDecoder,
}

impl RawSession {
    /// Opens the control stream on a new bare connection to `server`.
    pub async fn open(server: &TestServer) -> Self {
        let conn = server.raw_connection().await;
        let (send, recv) = conn.open_bi().await.expect("opening the control stream");
        Self {
            conn,
            send,
            recv,
            buf: bytes::BytesMut::new(),
            decoder: rtm_proto::FrameDecoder::new(1 << 20),
        }
    }

    /// Opens a bare connection and says hello, checking the `Welcome`.
    pub async fn hello(server: &TestServer) -> Self {
        use rtm_proto::{ClientMsg, Hello, ServerMsg};
        let mut raw = Self::open(server).await;
        raw.send_msg(&ClientMsg::Hello(Hello {
            version: rtm_proto::PROTOCOL_VERSION,
            agent: "raw".into(),
        }))
        .await;
        assert!(matches!(raw.next_msg().await, ServerMsg::Welcome(_)));
        raw
    }

    /// Opens a session and logs in as `user_id` of [`TEST_APP_ID`], checking the answers.
    pub async fn login(server: &TestServer, user_id: &str) -> Self {
        Self::login_with_ticket(server, user_id).await.0
    }

    /// Like [`RawSession::login`], and returns the session's resume ticket too.
    pub async fn login_with_ticket(
        server: &TestServer,
        user_id: &str,
    ) -> (Self, rtm_proto::SessionTicket) {
        use rtm_proto::{Request, Response};
        let mut raw = Self::hello(server).await;
        let login = rtm_proto::LoginRequest {
            app_id: TEST_APP_ID.into(),
            user_id: user_id.into(),
            token: String::new(),
            use_string_user_id: true,
            // A raw session sends no heartbeats: the longest interval keeps it from being
            // taken for a lost connection during a test.
            heartbeat_interval: 1800,
            presence_timeout: 300,
        };
        match raw.request(1, Request::Login(login)).await {
            Ok(Response::Login { ticket, .. }) => (raw, ticket),
            other => panic!("login failed: {other:?}"),
        }
    }

    /// Sends a `Resume` (request `id`) of `user_id`'s session with `ticket`, nothing received
    /// yet, and waits for the answer.
    pub async fn resume(
        &mut self,
        id: u32,
        user_id: &str,
        ticket: rtm_proto::SessionTicket,
    ) -> Result<rtm_proto::Response, rtm_proto::WireError> {
        let resume = rtm_proto::ResumeRequest {
            app_id: TEST_APP_ID.into(),
            user_id: user_id.into(),
            ticket,
            received: Vec::new(),
        };
        self.request(id, rtm_proto::Request::Resume(resume)).await
    }

    /// Waits (up to [`EVENT_DEADLINE`]) for the server to close the connection, and returns
    /// the application close code (panics if it ended otherwise).
    pub async fn close_code(&self) -> u32 {
        let closed = within(
            EVENT_DEADLINE,
            "the connection to close",
            self.conn.closed(),
        )
        .await;
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                u32::try_from(close.error_code.into_inner()).expect("a 32-bit close code")
            }
            other => panic!("closed otherwise: {other:?}"),
        }
    }

    /// The first `count` frames of the next delivery stream the server opens (its `Lane`
    /// frame first).
    pub async fn delivery_frames(&self, count: usize) -> Vec<rtm_proto::ServerMsg> {
        let mut events = within(EVENT_DEADLINE, "a delivery stream", self.conn.accept_uni())
            .await
            .expect("a delivery stream");
        let mut decoder = rtm_proto::FrameDecoder::new(1 << 16);
        let mut bytes = bytes::BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < count {
            let chunk = within(EVENT_DEADLINE, "an event", events.read_chunk(4096, true))
                .await
                .expect("reading a delivery stream")
                .expect("the stream stays open");
            bytes.extend_from_slice(&chunk.bytes);
            while let Some(body) = decoder.decode(&mut bytes).expect("frame size") {
                frames.push(rtm_proto::ServerMsg::decode(&body).expect("a server frame"));
            }
        }
        frames
    }

    /// Writes raw bytes on the control stream.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("writing to the control stream");
    }

    /// Writes one message as a frame.
    pub async fn send_msg(&mut self, msg: &rtm_proto::ClientMsg) {
        let frame = rtm_proto::encode_frame(msg);
        self.send_bytes(&frame).await;
    }

    /// Sends `request` with `id` and waits for the answer with that id.
    pub async fn request(
        &mut self,
        id: u32,
        request: rtm_proto::Request,
    ) -> Result<rtm_proto::Response, rtm_proto::WireError> {
        let id = rtm_proto::RequestId(id);
        self.send_msg(&rtm_proto::ClientMsg::Request { id, request })
            .await;
        loop {
            if let rtm_proto::ServerMsg::Response { id: got, result } = self.next_msg().await
                && got == id
            {
                return result;
            }
        }
    }

    /// The next message the server sends on the control stream (panics after the deadline).
    pub async fn next_msg(&mut self) -> rtm_proto::ServerMsg {
        let read = async {
            loop {
                if let Some(body) = self.decoder.decode(&mut self.buf).expect("frame size") {
                    return rtm_proto::ServerMsg::decode(&body).expect("a decodable server frame");
                }
                match self
                    .recv
                    .read_chunk(64 * 1024, true)
                    .await
                    .expect("reading")
                {
                    Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                    None => panic!("the server finished the control stream"),
                }
            }
        };
        within(EVENT_DEADLINE, "a frame from the server", read).await
    }
}
