//! The Redis engine driven directly, without servers: what is hard to reach through clients.
//! Skipped where `redis-server` is not installed, unless `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::time::Duration;

use rtm_proto::ChannelType;
use rtm_server::engine::{Departed, RedisConfig, RedisEngine, Router};
use rtm_testkit::{RedisServer, init_tracing, within};

fn config(redis: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(vec![redis.url()]);
    config.node_timeout = Duration::from_secs(1);
    config
}

/// A user leaves a channel, comes back and leaves again within the debounce window; the first
/// leave's window then ends. The node dies while the second leave is pending: the node that
/// reaps it still finds that leave and hands it on, as a leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_leave_survives_the_release_of_the_first_when_its_node_dies() {
    if !RedisServer::available() {
        return;
    }
    // The reaper's warnings, should it fail.
    init_tracing();
    let redis = RedisServer::start();
    let dying = config(&redis);
    // The dying node lives in a runtime of its own, stopped as a crash would stop it.
    let runtime = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let node = RedisEngine::open(dying).await.expect("node 1");
            let (app, m) = ("app", ChannelType::Message);
            let first = node.hold_leave(app, m, "room", "bob").await.unwrap();
            assert!(node.cancel_leave(app, m, "room", "bob").await.unwrap());
            let _second = node.hold_leave(app, m, "room", "bob").await.unwrap();
            // The first window ends: that leave is no longer pending (the second replaced it).
            assert!(
                !node
                    .release_leave(app, m, "room", "bob", first)
                    .await
                    .unwrap()
            );
            // Kept from being dropped (a drop would stop it cleanly): the runtime's end kills it.
            std::mem::forget(node);
        });
        runtime
    })
    .join()
    .expect("node 1's thread");
    runtime.shutdown_background();

    let reaper = RedisEngine::open(config(&redis)).await.expect("node 2");
    let mut departures = reaper.departures().expect("taken once");
    let gone = within(
        Duration::from_secs(20),
        "node 1's pending leave to be handed on",
        async {
            match departures.recv().await.expect("the reaper's departures") {
                Departed::Member(gone) => gone,
                // Node 1 logged nobody in: no session of it is gone.
                Departed::Session(session) => panic!("unexpected {session:?}"),
            }
        },
    )
    .await;
    assert!(gone.left);
    assert_eq!(
        (
            gone.session.user_id(),
            gone.channel.as_str(),
            gone.channel_type
        ),
        ("bob", "room", ChannelType::Message)
    );
}
