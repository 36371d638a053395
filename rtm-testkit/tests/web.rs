//! The ways in for browsers: WebSocket and WebTransport. Bad requests and bad input get a clear
//! HTTP status or close code, and the server goes on serving; every capability works over each
//! transport (`docs/protocol.md` §1.4, §1.5).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtm_client::{
    AcquireLockOptions, ChannelType, PublishOptions, RtmEvent, SetLockOptions, SubscribeOptions,
    WhoNowOptions,
};
use rtm_proto::{ClientMsg, Hello, PROTOCOL_VERSION, Request, RequestId, ServerMsg};
use rtm_testkit::{TestServer, TestTransport, expect_message, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const DEADLINE: Duration = Duration::from_secs(20);

/// Sends a raw HTTP/1.1 request to the WebSocket listener and returns the status and body.
async fn http(server: &TestServer, request: &str) -> (u16, String) {
    let addr = server.websocket_addr().expect("a WebSocket listener").addr;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    within(DEADLINE, "the HTTP answer", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket to the server, subprotocol `rtm.v1`, nothing sent yet.
async fn socket(server: &TestServer) -> Socket {
    let addr = server.websocket_addr().expect("a WebSocket listener").addr;
    let mut request = format!("ws://{addr}/rtm")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("rtm.v1"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("rtm.v1")
    );
    socket
}

/// The body of a frame, as a WebSocket message carries it.
fn body(msg: &ClientMsg) -> Bytes {
    rtm_proto::encode_frame(msg).slice(rtm_proto::frame::HEADER_LEN..)
}

async fn next_frame(socket: &mut Socket) -> ServerMsg {
    loop {
        match within(DEADLINE, "a frame", socket.next()).await {
            Some(Ok(Message::Binary(b))) => return ServerMsg::decode(&b).expect("a frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    loop {
        match within(DEADLINE, "the close", socket.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("expected a close frame, got {e}"),
            None => return None,
        }
    }
}

async fn hello(socket: &mut Socket) {
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        agent: "web.rs".into(),
    });
    socket
        .send(Message::Binary(body(&hello)))
        .await
        .expect("send");
    assert!(matches!(next_frame(socket).await, ServerMsg::Welcome(_)));
}

/// The server still serves: a client logs in over WebSocket.
async fn still_serving(server: &TestServer) {
    let client = rtm_client::RtmClient::new(
        rtm_testkit::TEST_APP_ID,
        "after",
        server.client_config_over(TestTransport::WebSocket),
    )
    .expect("client");
    within(
        DEADLINE,
        "a login after the bad input",
        client.login(Default::default()),
    )
    .await
    .expect("login");
}

#[tokio::test]
async fn bad_upgrades_get_a_status_that_says_what_is_wrong() {
    let mut config = TestServer::config();
    config.web.allowed_origins = Some(vec!["https://app.example.com".into()]);
    let server = TestServer::start_with(config).await;

    let (status, body) = http(&server, &upgrade("/rtm", "")).await;
    assert_eq!(status, 400, "no subprotocol");
    assert!(body.contains("rtm.v1"), "{body}");

    let (status, body) = http(
        &server,
        &upgrade("/rtm", "Sec-WebSocket-Protocol: chat\r\n"),
    )
    .await;
    assert_eq!(status, 400, "another subprotocol");
    assert!(body.contains("rtm.v1"), "{body}");

    let (status, body) = http(
        &server,
        &upgrade("/elsewhere", "Sec-WebSocket-Protocol: rtm.v1\r\n"),
    )
    .await;
    assert_eq!(status, 404, "another path");
    assert!(body.contains("/rtm"), "{body}");

    let (status, body) = http(
        &server,
        &upgrade(
            "/rtm",
            "Sec-WebSocket-Protocol: rtm.v1\r\nOrigin: https://evil.example\r\n",
        ),
    )
    .await;
    assert_eq!(status, 403, "an origin not in the list");
    assert!(body.contains("https://evil.example"), "{body}");

    let (status, _) = http(
        &server,
        &upgrade(
            "/rtm",
            "Sec-WebSocket-Protocol: rtm.v1\r\nOrigin: https://app.example.com\r\n",
        ),
    )
    .await;
    assert_eq!(status, 101, "an allowed origin");

    let (status, body) = http(
        &server,
        "GET /rtm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status == 400 || status == 426, "a plain GET: {status}");
    assert!(body.contains("not a WebSocket upgrade"), "{body}");

    let (status, _) = http(
        &server,
        "GET /rtm/certificate-hash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "the development certificate's hash");

    still_serving(&server).await;
}

#[tokio::test]
async fn a_text_message_closes_the_socket_with_1003() {
    let server = TestServer::start().await;
    let mut socket = socket(&server).await;
    hello(&mut socket).await;
    socket
        .send(Message::Text("hello".into()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Unsupported));
    still_serving(&server).await;
}

#[tokio::test]
async fn oversized_messages_are_answered_or_closed_with_1009() {
    let server = TestServer::start().await;
    let max = TestServer::config().connection.max_frame_len as usize;

    // Before a login, a frame over the pre-login limit is answered with an error, and the
    // connection goes on.
    let mut socket = socket(&server).await;
    hello(&mut socket).await;
    let big = ClientMsg::Request {
        id: RequestId(7),
        request: Request::Ping,
    };
    let mut message = body(&big).to_vec();
    message.resize(16 * 1024, 0);
    socket
        .send(Message::Binary(message.into()))
        .await
        .expect("send");
    match next_frame(&mut socket).await {
        ServerMsg::Response { id, result: Err(e) } => {
            assert_eq!(id, RequestId(7));
            assert_eq!(
                e.code,
                rtm_proto::ErrorCode::ChannelMessageLengthExceedLimitation
            );
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
    let ping = ClientMsg::Request {
        id: RequestId(8),
        request: Request::Ping,
    };
    socket
        .send(Message::Binary(body(&ping)))
        .await
        .expect("send");
    assert!(matches!(
        next_frame(&mut socket).await,
        ServerMsg::Response {
            id: RequestId(8),
            result: Ok(_)
        }
    ));

    // Far beyond the limit, the socket closes with 1009 before the server holds it all.
    let huge = vec![0u8; (2 * max).max(1 << 20) + 1024];
    let _ = socket.send(Message::Binary(huge.into())).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Size));
    still_serving(&server).await;
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_hello_closes_with_4001() {
    let server = TestServer::start().await;
    let mut socket = socket(&server).await;
    socket
        .send(Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff])))
        .await
        .expect("send");
    assert!(matches!(next_frame(&mut socket).await, ServerMsg::Error(_)));
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4001)));
    still_serving(&server).await;
}

/// Messages, user messages, presence, metadata, locks, topics and history, between a client on
/// each transport: the three are one service.
#[tokio::test]
async fn clients_on_all_three_transports_share_every_capability() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for (i, transport) in TestTransport::ALL.into_iter().enumerate() {
        let client = rtm_client::RtmClient::new(
            rtm_testkit::TEST_APP_ID,
            format!("user-{i}"),
            server.client_config_over(transport),
        )
        .expect("client");
        let events = client.events();
        within(DEADLINE, "login", client.login(Default::default()))
            .await
            .unwrap_or_else(|e| panic!("login over {transport:?}: {e}"));
        clients.push((transport, client, events));
    }
    for (_, client, _) in &clients {
        let options = SubscribeOptions {
            with_presence: true,
            with_lock: true,
            ..Default::default()
        };
        within(DEADLINE, "subscribe", client.subscribe("room", options))
            .await
            .expect("subscribe");
    }
    // Each publishes; every one receives all three messages.
    for (transport, client, _) in &clients {
        within(
            DEADLINE,
            "publish",
            client.publish(
                "room",
                format!("from {transport:?}"),
                PublishOptions::default(),
            ),
        )
        .await
        .expect("publish");
    }
    for (transport, _, events) in &mut clients {
        let mut got = Vec::new();
        while got.len() < 3 {
            let message = expect_message(events).await;
            got.push(message.message.as_text().unwrap_or_default().to_owned());
        }
        got.sort();
        assert_eq!(
            got,
            ["from Quic", "from WebSocket", "from WebTransport"],
            "{transport:?} received"
        );
    }
    // A user message from the WebSocket client to the WebTransport one.
    let options = PublishOptions {
        channel_type: ChannelType::User,
        ..Default::default()
    };
    within(
        DEADLINE,
        "user message",
        clients[2].1.publish("user-1", "direct", options),
    )
    .await
    .expect("user message");
    let message = expect_message(&mut clients[1].2).await;
    assert_eq!(message.publisher, "user-2");

    // Presence: who is in the room, asked over each.
    for (transport, client, _) in &clients {
        let now = within(
            DEADLINE,
            "who_now",
            client
                .presence()
                .who_now("room", ChannelType::Message, WhoNowOptions::default()),
        )
        .await
        .expect("who_now");
        assert_eq!(now.total_occupancy, 3, "who_now over {transport:?}");
    }

    // A lock taken over WebSocket is seen as held over QUIC.
    let ws = &clients[2].1;
    let m = ChannelType::Message;
    within(
        DEADLINE,
        "set lock",
        ws.lock()
            .set_lock("room", m, "l", SetLockOptions::default()),
    )
    .await
    .expect("set lock");
    let acquire = AcquireLockOptions::default();
    within(
        DEADLINE,
        "acquire",
        ws.lock().acquire_lock("room", m, "l", acquire),
    )
    .await
    .expect("acquire");
    let locks = within(
        DEADLINE,
        "get locks",
        clients[0].1.lock().get_locks("room", m),
    )
    .await
    .expect("get locks");
    assert_eq!(locks.lock_details[0].owner, "user-2");

    // The lock's events reach every transport.
    for (_, _, events) in &mut clients {
        let _ = within(DEADLINE, "a lock event", async {
            loop {
                if let Some(RtmEvent::Lock(_)) = events.recv().await {
                    return;
                }
            }
        })
        .await;
    }
}

/// Waits for the link to reach `state`; a lost connection is noticed at once (a reset), the
/// resume takes a reconnect.
async fn link_reaches(events: &mut rtm_client::EventStream, state: rtm_client::LinkState) {
    within(Duration::from_secs(45), "the link state", async {
        while let Some(event) = events.recv().await {
            if let RtmEvent::LinkState(s) = event
                && s.current_state == state
            {
                return;
            }
        }
        panic!("the event stream ended");
    })
    .await;
}

/// A relay to the server's WebSocket listener, and "roamer" logged in through it over
/// WebSocket and subscribed to "room".
async fn roamer_through_relay(
    server: &TestServer,
) -> (
    rtm_testkit::TcpRelay,
    rtm_client::RtmClient,
    rtm_client::EventStream,
) {
    let relay = rtm_testkit::TcpRelay::start(server.websocket_addr().expect("WebSocket").addr)
        .await
        .expect("relay");
    let mut config = server.client_config_over(TestTransport::WebSocket);
    config.transport = rtm_client::Transport::WebSocket {
        addr: relay.addr(),
        tls: false,
    };
    let roamer = rtm_client::RtmClient::new(rtm_testkit::TEST_APP_ID, "roamer", config).unwrap();
    let events = roamer.events();
    roamer.login(Default::default()).await.unwrap();
    roamer
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    (relay, roamer, events)
}

/// A Login request (id 1) for `user` with this heartbeat interval.
fn login_request(user: &str, heartbeat_interval: u16) -> ClientMsg {
    ClientMsg::Request {
        id: RequestId(1),
        request: Request::Login(rtm_proto::LoginRequest {
            app_id: rtm_testkit::TEST_APP_ID.into(),
            user_id: user.into(),
            token: String::new(),
            use_string_user_id: true,
            heartbeat_interval,
            presence_timeout: 300,
        }),
    }
}

/// A WebSocket connection broken under a session: the client reconnects, resumes the session
/// and receives, in order, what was published meanwhile; the server kept the session.
#[tokio::test]
async fn a_websocket_session_resumes_after_its_connection_breaks() {
    use rtm_client::LinkState;
    let server = TestServer::start().await;
    let (relay, _roamer, mut events) = roamer_through_relay(&server).await;
    let (sender, _) = server.login("sender").await;
    let publish = |text: String| sender.publish("room", text, PublishOptions::default());
    publish("before".into()).await.unwrap();
    assert_eq!(
        expect_message(&mut events).await.message.as_text(),
        Some("before")
    );

    relay.cut();
    link_reaches(&mut events, LinkState::Disconnected).await;
    for i in 0..20 {
        publish(format!("during {i}")).await.unwrap();
    }
    link_reaches(&mut events, LinkState::Connected).await;
    for i in 0..20 {
        let expected = format!("during {i}");
        assert_eq!(
            expect_message(&mut events).await.message.as_text(),
            Some(expected.as_str())
        );
    }
    publish("after".into()).await.unwrap();
    assert_eq!(
        expect_message(&mut events).await.message.as_text(),
        Some("after")
    );
    assert_eq!(
        server
            .metrics()
            .sessions_resumed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A WebSocket client that stops sending (no heartbeat) is closed with 4003 after its heartbeat
/// interval + 10 s, and its session waits for a resume; one that keeps sending heartbeats is not.
#[tokio::test]
async fn a_silent_websocket_client_is_closed_after_its_heartbeat_allowance() {
    let server = TestServer::start().await;
    let login = |user: &str| login_request(user, 5);
    let mut silent = socket(&server).await;
    hello(&mut silent).await;
    silent
        .send(Message::Binary(body(&login("silent"))))
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut silent).await,
        ServerMsg::Response { result: Ok(_), .. }
    ));
    let mut talker = socket(&server).await;
    hello(&mut talker).await;
    talker
        .send(Message::Binary(body(&login("talker"))))
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut talker).await,
        ServerMsg::Response { result: Ok(_), .. }
    ));
    let started = tokio::time::Instant::now();
    // The talker sends a heartbeat every 4 s while the silent one says nothing.
    let keep_talking = async {
        // The client's own heartbeat timer (a pace, not a wait for an event).
        let mut every = tokio::time::interval(Duration::from_secs(4));
        every.tick().await;
        for i in 2.. {
            every.tick().await;
            let heartbeat = ClientMsg::Request {
                id: RequestId(i),
                request: Request::Heartbeat { received: vec![] },
            };
            talker
                .send(Message::Binary(body(&heartbeat)))
                .await
                .unwrap();
            assert!(matches!(
                next_frame(&mut talker).await,
                ServerMsg::Response {
                    result: Ok(rtm_proto::Response::Pong { .. }),
                    ..
                }
            ));
        }
    };
    let code = tokio::select! {
        code = close_code(&mut silent) => code,
        () = keep_talking => unreachable!(),
    };
    assert_eq!(code, Some(CloseCode::from(4003)));
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    let metrics = server.metrics();
    assert_eq!(
        metrics
            .heartbeat_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// The server falls silent to a WebSocket client (its replies are lost on the way): the client
/// notices after its heartbeat allowance and resumes its session on a new connection. It must
/// not say goodbye on the old one (a close with 1000 would end the session on the server).
#[tokio::test]
async fn a_websocket_client_that_hears_nothing_resumes_its_session() {
    use rtm_client::LinkState;
    let server = TestServer::start().await;
    let (relay, _roamer, mut events) = roamer_through_relay(&server).await;
    let (sender, _) = server.login("sender").await;
    relay.mute();
    link_reaches(&mut events, LinkState::Disconnected).await;
    sender
        .publish("room", "meanwhile", PublishOptions::default())
        .await
        .unwrap();
    link_reaches(&mut events, LinkState::Connected).await;
    assert_eq!(
        expect_message(&mut events).await.message.as_text(),
        Some("meanwhile")
    );
    let metrics = server.metrics();
    assert_eq!(
        metrics
            .sessions_resumed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A WebSocket client that stops reading while events pile up and asks for something is closed
/// as a slow consumer, and its session ends: neither the server's blocked writes nor the
/// waiting answer hold the session (or the connection) up.
#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_closed_and_its_session_ends() {
    use std::sync::atomic::Ordering;
    let mut config = TestServer::config();
    config.connection.max_session_bytes = 4 << 20;
    let server = TestServer::start_with(config).await;
    let mut mute = socket(&server).await;
    hello(&mut mute).await;
    let login = login_request("mute", 30);
    mute.send(Message::Binary(body(&login))).await.unwrap();
    assert!(matches!(
        next_frame(&mut mute).await,
        ServerMsg::Response { result: Ok(_), .. }
    ));
    let subscribe = ClientMsg::Request {
        id: RequestId(2),
        request: Request::Subscribe {
            channel: "flood".into(),
            options: Default::default(),
        },
    };
    mute.send(Message::Binary(body(&subscribe))).await.unwrap();
    assert!(matches!(
        next_frame(&mut mute).await,
        ServerMsg::Response { result: Ok(_), .. }
    ));
    let metrics = server.metrics();
    let (publisher, _p) = server.login("publisher").await;
    let payload = vec![7u8; rtm_proto::limits::MAX_MESSAGE_SIZE];
    for i in 0..400u32 {
        if metrics.slow_consumer_disconnects.load(Ordering::Relaxed) > 0 {
            break;
        }
        publisher
            .publish("flood", payload.clone(), PublishOptions::default())
            .await
            .unwrap();
        if i == 20 {
            // An answer the server must write behind the events nobody reads.
            let heartbeat = ClientMsg::Request {
                id: RequestId(3),
                request: Request::Heartbeat { received: vec![] },
            };
            mute.send(Message::Binary(body(&heartbeat))).await.unwrap();
        }
    }
    rtm_testkit::wait_until(DEADLINE, "the mute session to end", || {
        metrics.slow_consumer_disconnects.load(Ordering::Relaxed) == 1
            && metrics.sessions.load(Ordering::Relaxed) == 1
    })
    .await;
    drop(mute);
}
