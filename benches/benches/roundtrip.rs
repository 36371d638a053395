//! One publish-to-receive round trip through a real server over QUIC on loopback: client A
//! publishes, client B (subscribed) receives the message event. The server and both clients run
//! in this process (the test kit); the timing is per message, closed loop. Tail latency under
//! load is the load generator's job, not criterion's.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtm_client::{ChannelType, PublishOptions, RtmEvent, SubscribeOptions};
use rtm_testkit::TestServer;

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (server, publisher, subscriber, events) = rt.block_on(async {
        let server = TestServer::start().await;
        let (publisher, _) = server.login("publisher").await;
        let (subscriber, events) = server.login("subscriber").await;
        subscriber
            .subscribe("bench", SubscribeOptions::default())
            .await
            .expect("subscribe");
        (server, publisher, subscriber, events)
    });
    let events = tokio::sync::Mutex::new(events);

    let mut group = c.benchmark_group("roundtrip");
    for size in [16usize, 1024, 32 * 1024] {
        group.throughput(Throughput::Elements(1));
        let payload = vec![7u8; size];
        for (name, channel, channel_type) in [
            ("channel", "bench", ChannelType::Message),
            ("user", "subscriber", ChannelType::User),
        ] {
            group.bench_with_input(BenchmarkId::new(name, size), &payload, |b, payload| {
                b.to_async(&rt).iter(|| async {
                    let mut events = events.lock().await;
                    let options = PublishOptions {
                        channel_type,
                        ..Default::default()
                    };
                    let (published, received) = tokio::join!(
                        publisher.publish(channel, payload.clone(), options),
                        async {
                            loop {
                                if let Some(RtmEvent::Message(m)) = events.recv().await {
                                    return m;
                                }
                            }
                        }
                    );
                    published.expect("publish");
                    received
                })
            });
        }
    }
    group.finish();
    drop((publisher, subscriber));
    rt.block_on(server.shutdown());
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
