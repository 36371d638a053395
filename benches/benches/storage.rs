//! Metadata and history through a real server over QUIC on loopback, one call at a time
//! (closed loop): what a committed write costs with each durability setting, and a read; and
//! stored messages from 32 publishers at once, which share their commits (group commit).
//! Server and client run in this process (the test kit), the database in a temporary
//! directory on the machine's disk.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtm_client::{ChannelType, MetadataItem, PublishOptions};
use rtm_server::config::DurabilitySetting;
use rtm_testkit::TestServer;

/// Publishers of the concurrent bench.
const WRITERS: usize = 32;

fn storage(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("storage");
    for (name, durability) in [
        ("full", DurabilitySetting::Full),
        ("normal", DurabilitySetting::Normal),
    ] {
        let (server, client) = rt.block_on(async {
            let mut config = TestServer::config();
            config.storage.durability = durability;
            config.limits.history_max_messages = 1000;
            let server = TestServer::start_with(config).await;
            let (client, _) = server.login("bench").await;
            (server, client)
        });
        let storage = client.storage();
        let mut n = 0u64;
        group.bench_function(format!("set_channel_metadata/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let item = MetadataItem::new(format!("k{}", n % 64), n.to_string());
                let storage = storage.clone();
                async move {
                    storage
                        .set_channel_metadata(
                            "bench",
                            ChannelType::Message,
                            vec![item],
                            Default::default(),
                        )
                        .await
                        .expect("set")
                }
            })
        });
        let stored = PublishOptions {
            store_in_history: true,
            ..Default::default()
        };
        group.bench_function(format!("publish_stored/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                client
                    .publish("bench", vec![7u8; 100], stored.clone())
                    .await
                    .expect("publish")
            })
        });
        // 32 users publishing stored messages at once: each element is one stored message.
        let writers: Vec<_> = rt.block_on(async {
            let mut writers = Vec::new();
            for i in 0..WRITERS {
                writers.push(server.login(&format!("writer{i}")).await.0);
            }
            writers
        });
        group.throughput(Throughput::Elements(WRITERS as u64));
        group.bench_function(format!("publish_stored_{WRITERS}_writers/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                let calls: Vec<_> = writers
                    .iter()
                    .map(|w| w.publish("bench", vec![7u8; 100], stored.clone()))
                    .collect();
                async move {
                    for call in calls {
                        call.await.expect("publish");
                    }
                }
            })
        });
        group.throughput(Throughput::Elements(1));
        drop(writers);
        if durability == DurabilitySetting::Full {
            group.bench_function("publish_not_stored", |b| {
                b.to_async(&rt).iter(|| async {
                    client
                        .publish("bench", vec![7u8; 100], PublishOptions::default())
                        .await
                        .expect("publish")
                })
            });
            let locks = client.lock();
            group.bench_function("get_locks", |b| {
                b.to_async(&rt).iter(|| async {
                    locks
                        .get_locks("bench", ChannelType::Message)
                        .await
                        .expect("get")
                })
            });
            group.bench_function("get_channel_metadata", |b| {
                b.to_async(&rt).iter(|| async {
                    storage
                        .get_channel_metadata("bench", ChannelType::Message)
                        .await
                        .expect("get")
                })
            });
        }
        drop((storage, client));
        rt.block_on(server.shutdown());
    }
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
