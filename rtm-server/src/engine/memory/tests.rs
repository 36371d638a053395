//! The in-memory engine's routing, presence and stream channels, driven directly.

use super::*;
use crate::metrics::Metrics;
use crate::outbox::{Next, Outbox, OutboxRx};

fn session(id: u64, app: &str, user: &str) -> (SessionHandle, OutboxRx) {
    let (outbox, rx) = Outbox::new(8, Arc::new(Metrics::default()));
    (SessionHandle::new(SessionId(id), app, user, outbox), rx)
}

async fn frames(rx: &mut OutboxRx) -> Vec<Bytes> {
    rx.drain().into_iter().map(|(_, frame)| frame).collect()
}

#[tokio::test]
async fn publish_reaches_subscribers_of_that_app_only() {
    let engine = MemoryEngine::new();
    let (a, mut a_rx) = session(1, "app1", "a");
    let (b, mut b_rx) = session(2, "app2", "b");
    let (quiet, mut quiet_rx) = session(3, "app1", "q");
    for s in [&a, &b, &quiet] {
        engine.attach(s).await.unwrap();
    }
    engine
        .subscribe(&a, "ch", SubscribeOptions::default())
        .await
        .unwrap();
    engine
        .subscribe(&b, "ch", SubscribeOptions::default())
        .await
        .unwrap();
    let no_messages = SubscribeOptions {
        with_message: false,
        ..Default::default()
    };
    engine.subscribe(&quiet, "ch", no_messages).await.unwrap();
    let d = engine
        .publish("app1", "ch", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        d,
        Delivery {
            queued: 1,
            overflowed: 0
        }
    );
    assert_eq!(frames(&mut a_rx).await, vec![Bytes::from_static(b"x")]);
    assert!(frames(&mut b_rx).await.is_empty());
    assert!(frames(&mut quiet_rx).await.is_empty());
}

#[tokio::test]
async fn second_login_closes_the_first_and_survives_its_detach() {
    let engine = MemoryEngine::new();
    let (first, mut first_rx) = session(1, "app", "tony");
    let (second, _second_rx) = session(2, "app", "tony");
    engine.attach(&first).await.unwrap();
    engine.attach(&second).await.unwrap();
    assert!(matches!(
        first_rx.next(4).await,
        Next::Close(CloseReason::SameUidLogin)
    ));
    // The old connection cleaning up must not unregister the new one.
    engine.detach(&first).await.unwrap();
    let d = engine
        .send_to_user("app", "tony", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(
        d,
        Some(Delivery {
            queued: 1,
            overflowed: 0
        })
    );
    engine.detach(&second).await.unwrap();
    assert_eq!(
        engine
            .send_to_user("app", "tony", Bytes::new())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn unsubscribe_and_detach_remove_subscriptions() {
    let engine = MemoryEngine::new();
    let (a, _a_rx) = session(1, "app", "a");
    let (b, _b_rx) = session(2, "app", "b");
    engine.attach(&a).await.unwrap();
    engine.attach(&b).await.unwrap();
    engine
        .subscribe(&a, "ch", SubscribeOptions::default())
        .await
        .unwrap();
    engine
        .subscribe(&a, "ch", SubscribeOptions::default())
        .await
        .unwrap();
    engine
        .subscribe(&b, "ch", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.subscriber_count("app", "ch"), 2);
    engine.unsubscribe(&a, "ch").await.unwrap();
    assert_eq!(engine.subscriber_count("app", "ch"), 1);
    engine.detach(&b).await.unwrap();
    assert_eq!(engine.subscriber_count("app", "ch"), 0);
}
