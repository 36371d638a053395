//! One publish-to-receive round trip through a real server over QUIC on loopback: client A
//! publishes, client B (subscribed) receives the message event. The server and the clients run
//! in this process (the test kit); the timing is per message, closed loop. Tail latency under
//! load is the load generator's job, not criterion's.
//!
//! `channel` and `user` are plain; `aes128` and `aes256` publish to a channel with end-to-end
//! encryption on both clients (A seals, B opens), to show what encryption adds.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtm_client::{
    ChannelType, ENCRYPTION_OVERHEAD, EncryptionMode, EventStream, PublishOptions, RtmClient,
    RtmEvent, SubscribeOptions,
};
use rtm_testkit::{TEST_APP_ID, TestServer};

/// A publisher and a subscriber of `channel` with `mode`.
struct Pair {
    name: &'static str,
    channel: String,
    channel_type: ChannelType,
    publisher: RtmClient,
    _subscriber: RtmClient,
    events: tokio::sync::Mutex<EventStream>,
}

async fn pair(server: &TestServer, name: &'static str, mode: EncryptionMode) -> Pair {
    let login = |user: String| {
        let mut config = server.client_config();
        config.encryption_mode = mode;
        config.cipher_key = "0123456789abcdef0123456789abcdef".into();
        config.salt = b"benchmark salt".to_vec();
        async move {
            let client = RtmClient::new(TEST_APP_ID, user, config).expect("a client");
            let events = client.events();
            client.login(Default::default()).await.expect("login");
            (client, events)
        }
    };
    let (publisher, _) = login(format!("pub-{name}")).await;
    let (subscriber, events) = login(format!("sub-{name}")).await;
    let (channel, channel_type) = if name == "user" {
        (subscriber.user_id().to_owned(), ChannelType::User)
    } else {
        let channel = format!("bench-{name}");
        subscriber
            .subscribe(&channel, SubscribeOptions::default())
            .await
            .expect("subscribe");
        (channel, ChannelType::Message)
    };
    Pair {
        name,
        channel,
        channel_type,
        publisher,
        _subscriber: subscriber,
        events: tokio::sync::Mutex::new(events),
    }
}

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (server, pairs) = rt.block_on(async {
        let server = TestServer::start().await;
        let mut pairs = Vec::new();
        for (name, mode) in [
            ("channel", EncryptionMode::None),
            ("user", EncryptionMode::None),
            ("aes128", EncryptionMode::Aes128Gcm),
            ("aes256", EncryptionMode::Aes256Gcm),
        ] {
            pairs.push(pair(&server, name, mode).await);
        }
        (server, pairs)
    });

    let mut group = c.benchmark_group("roundtrip");
    // The largest payload leaves room for encryption within the 32 KiB message limit.
    for size in [16usize, 1024, 32 * 1024 - ENCRYPTION_OVERHEAD] {
        group.throughput(Throughput::Elements(1));
        let payload = vec![7u8; size];
        for pair in &pairs {
            group.bench_with_input(BenchmarkId::new(pair.name, size), &payload, |b, payload| {
                b.to_async(&rt).iter(|| async {
                    let mut events = pair.events.lock().await;
                    let options = PublishOptions {
                        channel_type: pair.channel_type,
                        ..Default::default()
                    };
                    let (published, received) = tokio::join!(
                        pair.publisher
                            .publish(&pair.channel, payload.clone(), options),
                        async {
                            loop {
                                if let Some(RtmEvent::Message(m)) = events.recv().await {
                                    return m;
                                }
                            }
                        }
                    );
                    published.expect("publish");
                    assert!(!received.message.is_encrypted(), "opened by the subscriber");
                    received
                })
            });
        }
    }
    group.finish();
    drop(pairs);
    rt.block_on(server.shutdown());
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
