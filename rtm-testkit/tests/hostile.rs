//! End-to-end: what a hostile or unlucky client could do to the server, and must not (issue
//! 14). Each test names the defect it keeps from coming back. Limits of single requests and
//! malformed frames are in `limits.rs`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rtm_client::{
    ChannelType, GetHistoryMessageOptions, PresenceEventType, PublishOptions, RtmClient, RtmEvent,
    StateDetail, SubscribeOptions, WhoNowOptions,
};
use rtm_proto::{Request, SubscribeOptions as WireSubscribe};
use rtm_testkit::{RawSession, TestServer, expect_event, within};

const DEADLINE: Duration = Duration::from_secs(60);

/// 32 pairs of the longest keys and values: the fullest state a user can have (about 35 KB).
fn full_state(user: usize) -> StateDetail {
    (0..rtm_proto::limits::MAX_STATE_PAIRS)
        .map(|k| (format!("{user:08}-{k:055}"), "v".repeat(1024)))
        .collect()
}

fn stored() -> PublishOptions {
    PublishOptions {
        store_in_history: true,
        ..Default::default()
    }
}

/// Defect 1: a page of 100 stored 32 KB messages is larger than a frame. It comes in shorter
/// pages (by bytes), and the reader's session goes on.
#[tokio::test]
async fn a_history_of_full_size_messages_is_read_in_pages_that_fit() {
    let mut config = TestServer::config();
    config.limits.history_max_messages = 1000;
    let server = TestServer::start_with(config).await;
    let (alice, _a) = server.login("alice").await;
    for i in 0..100u8 {
        let mut payload = vec![i; rtm_proto::limits::MAX_MESSAGE_SIZE];
        payload[0] = i;
        alice.publish("big", payload, stored()).await.unwrap();
    }
    let (bob, mut bob_events) = server.login("bob").await;
    let mut seen = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let page = bob
            .history()
            .get_messages(
                "big",
                ChannelType::Message,
                GetHistoryMessageOptions {
                    message_count: Some(100),
                    start,
                    ..Default::default()
                },
            )
            .await
            .expect("a page that fits a frame");
        pages += 1;
        assert!(
            page.message_list.len() < 100,
            "a page of 3.2 MB cannot be one frame"
        );
        seen.extend(page.message_list.iter().map(|m| m.message.as_bytes()[0]));
        if page.new_start == 0 {
            break;
        }
        start = page.new_start;
    }
    assert!(pages >= 4, "{pages} pages");
    assert_eq!(seen, (0..100u8).rev().collect::<Vec<_>>());
    // The reader's session still works.
    bob.subscribe("after", SubscribeOptions::default())
        .await
        .unwrap();
    alice
        .publish("after", "still here", PublishOptions::default())
        .await
        .unwrap();
    let m = rtm_testkit::expect_message(&mut bob_events).await;
    assert_eq!(m.message.as_text(), Some("still here"));
}

/// Defect 1: presence in a channel of 1 000 users with full states (35 MB): the changes reach
/// a subscriber already there as several INTERVAL events, a new subscriber gets the whole
/// snapshot (sent in parts, joined by the client), and `who_now` pages are cut by bytes.
#[tokio::test]
async fn presence_of_a_thousand_users_with_full_states_reaches_everyone() {
    const USERS: usize = 1000;
    let mut config = TestServer::config();
    config.limits.presence_interval_secs = 5;
    let server = TestServer::start_with(config).await;
    let with_presence = SubscribeOptions {
        with_presence: true,
        ..Default::default()
    };
    let (early, mut early_events) = server.login("early").await;
    early.subscribe("crowd", with_presence).await.unwrap();

    let mut users: Vec<RtmClient> = Vec::with_capacity(USERS - 1);
    for i in 0..USERS - 1 {
        let client = server.client(&format!("u{i:04}"));
        client.login(Default::default()).await.unwrap();
        let quiet_events = SubscribeOptions {
            with_presence: false,
            ..Default::default()
        };
        client.subscribe("crowd", quiet_events).await.unwrap();
        client
            .presence()
            .set_state("crowd", ChannelType::Message, full_state(i))
            .await
            .unwrap();
        users.push(client);
    }

    // The one already there learns every state (the first ones one by one, then in
    // intervals, each within a frame).
    let mut states: BTreeMap<String, StateDetail> = BTreeMap::new();
    within(DEADLINE, "every state change", async {
        while states.len() < USERS - 1 {
            match early_events.recv().await {
                Some(RtmEvent::Presence(p)) if p.channel_name == "crowd" => {
                    if let Some(interval) = p.interval {
                        for u in interval.user_state_list {
                            states.insert(u.user_id, u.states);
                        }
                    }
                    if p.event_type == PresenceEventType::RemoteStateChanged {
                        states.insert(p.publisher, p.state_changed);
                    }
                }
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await;
    assert!(states.iter().all(|(_, s)| s.len() == 32));

    // A newcomer's snapshot holds everyone, with full states.
    let (late, mut late_events) = server.login("late").await;
    late.subscribe("crowd", with_presence).await.unwrap();
    let snapshot = expect_event(&mut late_events, "the snapshot", |e| match e {
        RtmEvent::Presence(p)
            if p.channel_name == "crowd" && p.event_type == PresenceEventType::Snapshot =>
        {
            Some(p.snapshot)
        }
        _ => None,
    })
    .await;
    // Everyone but `late`, who is told of itself by its own arrival.
    assert!(snapshot.len() >= USERS, "{} users", snapshot.len());
    let full: HashSet<&str> = snapshot
        .iter()
        .filter(|u| u.states.len() == 32)
        .map(|u| u.user_id.as_str())
        .collect();
    assert_eq!(full.len(), USERS - 1);

    // who_now with states: pages that fit, together everyone.
    let mut listed = HashSet::new();
    let mut page = None;
    let mut pages = 0;
    loop {
        let answer = late
            .presence()
            .who_now(
                "crowd",
                ChannelType::Message,
                WhoNowOptions {
                    include_user_id: true,
                    include_state: true,
                    page,
                },
            )
            .await
            .unwrap();
        pages += 1;
        listed.extend(answer.occupants.into_iter().map(|o| o.user_id));
        if answer.next_page.is_empty() {
            break;
        }
        page = Some(answer.next_page);
    }
    assert_eq!(listed.len(), USERS + 1);
    assert!(pages > 10, "{pages} pages of at most 100 users");
    drop(users);
}

/// Defect 3: a client that reads its events but never acknowledges them used to pin up to
/// 4 096 frames per lane on the server. Now what a session holds is bounded in bytes, and such
/// a client is closed as a slow consumer; one that acknowledges keeps going.
#[tokio::test]
async fn a_client_that_never_acknowledges_is_closed_at_the_byte_bound() {
    let mut config = TestServer::config();
    config.connection.max_session_bytes = 4 << 20;
    let server = TestServer::start_with(config).await;
    let mut raw = RawSession::login(&server, "mute").await;
    let subscribe = Request::Subscribe {
        channel: "flood".into(),
        options: WireSubscribe::default(),
    };
    raw.request(2, subscribe).await.unwrap();
    // It reads everything that arrives, so QUIC's flow control never holds the server back.
    let read = Arc::new(AtomicUsize::new(0));
    let conn = raw.conn.clone();
    let counted = read.clone();
    tokio::spawn(async move {
        while let Ok(mut lane) = conn.accept_uni().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                while let Ok(Some(chunk)) = lane.read_chunk(1 << 20, true).await {
                    counted.fetch_add(chunk.bytes.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let (publisher, _p) = server.login("publisher").await;
    let payload = vec![7u8; rtm_proto::limits::MAX_MESSAGE_SIZE];
    for _ in 0..200 {
        if raw.conn.close_reason().is_some() {
            break;
        }
        publisher
            .publish("flood", payload.clone(), PublishOptions::default())
            .await
            .unwrap();
    }
    let reason = within(
        DEADLINE,
        "the mute client's connection to close",
        raw.conn.closed(),
    )
    .await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x11), "{close:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server
            .metrics()
            .slow_consumer_disconnects
            .load(Ordering::Relaxed),
        1
    );
    assert!(read.load(Ordering::Relaxed) > 0, "it was reading");
}

#[tokio::test]
async fn a_client_that_acknowledges_is_not_held_to_the_byte_bound() {
    let mut config = TestServer::config();
    config.connection.max_session_bytes = 4 << 20;
    let server = TestServer::start_with(config).await;
    let (reader, mut events) = server.login("reader").await;
    reader
        .subscribe("flood", SubscribeOptions::default())
        .await
        .unwrap();
    let (publisher, _p) = server.login("publisher").await;
    let payload = vec![7u8; rtm_proto::limits::MAX_MESSAGE_SIZE];
    // 200 × 32 KB: 6.4 MB through a 4 MiB bound, 32 messages (1 MB) ahead at most.
    let mut received = 0;
    for sent in 0..200 {
        publisher
            .publish("flood", payload.clone(), PublishOptions::default())
            .await
            .unwrap();
        while sent - received >= 32 {
            rtm_testkit::expect_message(&mut events).await;
            received += 1;
        }
    }
    while received < 200 {
        rtm_testkit::expect_message(&mut events).await;
        received += 1;
    }
    assert_eq!(
        server
            .metrics()
            .slow_consumer_disconnects
            .load(Ordering::Relaxed),
        0
    );
}

/// Defect 2: before login a connection may open one stream, and its receive window is small:
/// a client that opens more and writes on them cannot make the server buffer it.
#[tokio::test]
async fn a_connection_that_never_logs_in_cannot_make_the_server_buffer_data() {
    let mut config = TestServer::config();
    config.connection.login_timeout_secs = 2;
    let server = TestServer::start_with(config).await;
    let raw = RawSession::hello(&server).await;
    let conn = raw.conn.clone();
    // Three more streams with 256 KiB each, as a hostile client would send.
    for _ in 0..3 {
        let conn = conn.clone();
        tokio::spawn(async move {
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                let _ = send.write_all(&vec![0u8; 256 * 1024]).await;
            }
        });
    }
    within(DEADLINE, "the login timeout", conn.closed()).await;
    let sent = conn.stats().udp_tx.bytes;
    // The hello and the handshake, a few KiB; never the 768 KiB it tried to send.
    assert!(
        sent < 64 * 1024,
        "the client got {sent} bytes to the server"
    );
}

/// Defect 2: a connection that sends request after request without logging in (and need not
/// read the answers) is closed after a few.
#[tokio::test]
async fn a_connection_that_only_talks_before_login_is_closed() {
    let server = TestServer::start().await;
    let mut raw = RawSession::hello(&server).await;
    for id in 0..64 {
        raw.send_msg(&rtm_proto::ClientMsg::Request {
            id: rtm_proto::RequestId(id),
            request: Request::Ping,
        })
        .await;
    }
    match within(DEADLINE, "the connection to close", raw.conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x01), "{close:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Defect 2: connections are capped per address and in total; beyond the handshake rate,
/// clients must prove their address first (a QUIC Retry, which real clients answer).
#[tokio::test]
async fn connections_are_capped_and_fast_handshakes_are_retried() {
    let mut config = TestServer::config();
    config.connection.max_connections_per_address = 3;
    config.connection.handshake_rate = 1;
    let server = TestServer::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(server.raw_connection().await);
    }
    assert!(
        server.metrics().handshakes_retried.load(Ordering::Relaxed) >= 1,
        "three handshakes at once, one a second allowed"
    );
    let refused =
        rtm_client::raw::connect(&server.client_config_over(rtm_testkit::TestTransport::Quic))
            .await;
    assert!(refused.is_err(), "a fourth from the same address");
    assert_eq!(
        server.metrics().connections_refused.load(Ordering::Relaxed),
        1
    );
    // A place freed is a place taken.
    held.pop().unwrap().close(0u32.into(), b"");
    let mut again = None;
    within(DEADLINE, "a connection in the freed place", async {
        while again.is_none() {
            again = rtm_client::raw::connect(
                &server.client_config_over(rtm_testkit::TestTransport::Quic),
            )
            .await
            .ok();
            if again.is_none() {
                tokio::task::yield_now().await;
            }
        }
    })
    .await;

    let mut config = TestServer::config();
    config.connection.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let _a = server.raw_connection().await;
    let _b = server.raw_connection().await;
    assert!(
        rtm_client::raw::connect(&server.client_config_over(rtm_testkit::TestTransport::Quic))
            .await
            .is_err()
    );
}

/// A scripted server, for what the real one never sends: it accepts one client, logs it in,
/// then sends what the test asks for.
mod scripted {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use quinn::crypto::rustls::QuicServerConfig;
    use rtm_proto::{
        ClientMsg, FrameDecoder, LoginLimits, RequestId, Response, ServerMsg, SessionTicket,
        Welcome, encode_frame,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// An endpoint on a free port with the certificate of `data_dir` (a test server's).
    pub(super) fn endpoint(data_dir: &std::path::Path) -> quinn::Endpoint {
        let cert = CertificateDer::from_pem_file(data_dir.join("cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(data_dir.join("key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        tls.alpn_protocols = vec![rtm_proto::ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
    }

    /// Reads client frames off a stream.
    pub(super) struct Frames {
        recv: quinn::RecvStream,
        buf: BytesMut,
        decoder: FrameDecoder,
    }

    impl Frames {
        pub(super) async fn next(&mut self) -> ClientMsg {
            loop {
                if let Some(body) = self.decoder.decode(&mut self.buf).unwrap() {
                    return ClientMsg::decode(&body).unwrap();
                }
                let chunk = self.recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
                self.buf.extend_from_slice(&chunk.bytes);
            }
        }

        /// The next request, skipping acknowledgements.
        pub(super) async fn request(&mut self) -> RequestId {
            loop {
                if let ClientMsg::Request { id, .. } = self.next().await {
                    return id;
                }
            }
        }
    }

    /// Accepts a client and answers its hello and login.
    pub(super) async fn accept(
        endpoint: &quinn::Endpoint,
    ) -> (quinn::Connection, quinn::SendStream, Frames) {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, recv) = conn.accept_bi().await.unwrap();
        let mut frames = Frames {
            recv,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(1 << 16),
        };
        assert!(matches!(frames.next().await, ClientMsg::Hello(_)));
        let id = frames.request().await;
        let welcome = ServerMsg::Welcome(Welcome {
            version: rtm_proto::PROTOCOL_VERSION,
            server: "scripted".into(),
        });
        let login = ServerMsg::Response {
            id,
            result: Ok(Response::Login {
                timestamp: 1,
                limits: LoginLimits {
                    max_message_size: 32 * 1024,
                    max_subscriptions: 50,
                    publish_rate: 60,
                    max_frame_len: 36 * 1024,
                },
                ticket: SessionTicket {
                    session_id: 1,
                    secret: [7; 16],
                },
            }),
        };
        send.write_all(&encode_frame(&welcome)).await.unwrap();
        send.write_all(&encode_frame(&login)).await.unwrap();
        (conn, send, frames)
    }

    /// A frame that starts as `msg` and is `len` bytes long: more than any client accepts.
    pub(super) fn oversized(msg: &ServerMsg, len: usize) -> Bytes {
        let start = encode_frame(msg);
        let mut frame = BytesMut::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.extend_from_slice(&start[4..]);
        frame.resize(4 + len, 0);
        frame.freeze()
    }
}

/// Defect 1, the client's side: a frame larger than the protocol allows fails the one call it
/// answers, or is reported as an `Error` event, and the client reads on.
#[tokio::test]
async fn the_client_reports_an_oversized_frame_and_reads_on() {
    use rtm_proto::{ChannelType as Wire, Event, MessageEvent, Payload, Response, ServerMsg};

    let real = TestServer::start().await;
    let endpoint = scripted::endpoint(real.data_dir());
    // The scripted server speaks native QUIC only.
    let mut config = real.client_config_over(rtm_testkit::TestTransport::Quic);
    config.endpoint.addr = endpoint.local_addr().unwrap();
    let client = RtmClient::new(rtm_testkit::TEST_APP_ID, "victim", config).unwrap();
    let mut events = client.events();
    let (accepted, login) = tokio::join!(
        scripted::accept(&endpoint),
        client.login(Default::default())
    );
    login.unwrap();
    let (conn, mut control, mut frames) = accepted;

    // An event lane: an event of 2 MiB, then an ordinary one.
    let message = |text: &str| {
        ServerMsg::Event(Event::Message(MessageEvent {
            channel_type: Wire::Message,
            channel_name: "c".into(),
            topic_name: String::new(),
            message: Payload::Text(text.into()),
            custom_type: String::new(),
            publisher: "p".into(),
            timestamp: 2,
        }))
    };
    let mut lane = conn.open_uni().await.unwrap();
    lane.write_all(&rtm_proto::encode_frame(&ServerMsg::Lane { lane: 0 }))
        .await
        .unwrap();
    lane.write_all(&scripted::oversized(&message("huge"), 2 << 20))
        .await
        .unwrap();
    lane.write_all(&rtm_proto::encode_frame(&message("after")))
        .await
        .unwrap();
    let error = expect_event(&mut events, "the error event", |e| match e {
        RtmEvent::Error(e) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(error.code.code(), -11010, "{error:?}");
    let next = rtm_testkit::expect_message(&mut events).await;
    assert_eq!(next.message.as_text(), Some("after"));

    // The control stream: an oversized answer fails its call, the next call is answered.
    let published = |id, timestamp| ServerMsg::Response {
        id,
        result: Ok(Response::Publish {
            channel: "c".into(),
            timestamp,
        }),
    };
    let serve = async {
        let answer = published(frames.request().await, 3);
        control
            .write_all(&scripted::oversized(&answer, 3 << 20))
            .await
            .unwrap();
        let answer = published(frames.request().await, 4);
        control
            .write_all(&rtm_proto::encode_frame(&answer))
            .await
            .unwrap();
    };
    let calls = async {
        let first = client.publish("c", "one", PublishOptions::default()).await;
        let second = client.publish("c", "two", PublishOptions::default()).await;
        (first, second)
    };
    let ((), (first, second)) =
        within(DEADLINE, "both calls", async { tokio::join!(serve, calls) }).await;
    assert_eq!(first.unwrap_err().code.code(), -11010);
    assert_eq!(second.unwrap().timestamp, 4);
}
