//! End-to-end: publishes that queue up go out as one `PublishBatch` request
//! (`docs/protocol.md` §5.2.1). The server serves each message as a publish of its own, and the
//! client answers each call as its own answer would have.

use std::sync::atomic::Ordering;

use rtm_client::{ChannelType, ErrorCode, Payload, PublishOptions, SubscribeOptions};
use rtm_proto::{PublishBatch, Request, Response};
use rtm_testkit::{RawSession, TestServer, expect_message};

const MAX: usize = 32 * 1024;

fn batch(messages: Vec<Payload>) -> Request {
    Request::PublishBatch(PublishBatch {
        channel_type: ChannelType::Message,
        channel: "c".into(),
        custom_type: "note".into(),
        store: true,
        messages,
    })
}

/// A current-thread runtime: the calls below are all queued before the connection's driver
/// runs, so it sends them in batches.
#[tokio::test]
async fn publishes_made_at_once_are_each_answered_and_delivered_in_order() {
    let mut config = TestServer::config();
    config.limits.publish_rate = 30;
    let server = TestServer::start_with(config).await;
    let (fast, _) = server.login("fast").await;
    let (other, _) = server.login("other").await;
    let (watcher, mut events) = server.login("watcher").await;
    watcher
        .subscribe("c", SubscribeOptions::default())
        .await
        .unwrap();
    let calls: Vec<_> = (0..100u32)
        .map(|i| fast.publish("c", i.to_string(), PublishOptions::default()))
        .collect();
    let (mut accepted, mut refused, mut last) = (Vec::new(), 0, 0);
    for (i, call) in calls.into_iter().enumerate() {
        match call.await {
            Ok(published) => {
                assert_eq!(published.channel_name, "c");
                assert!(published.timestamp >= last, "timestamps in publish order");
                last = published.timestamp;
                accepted.push(i.to_string());
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ChannelPublishMessageTooFrequent, "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "100 publishes at once pass a rate of 30/s");
    assert!(accepted.len() >= 30, "the burst allowance: {accepted:?}");
    other
        .publish("c", "end", PublishOptions::default())
        .await
        .unwrap();
    let mut received = Vec::new();
    loop {
        let m = expect_message(&mut events).await;
        if m.publisher == "other" {
            break;
        }
        received.push(m.message.as_text().unwrap().to_owned());
    }
    assert_eq!(received, accepted, "every accepted message, in order, once");
}

#[tokio::test]
async fn a_batch_serves_each_message_as_a_publish_of_its_own() {
    let mut config = TestServer::config();
    config.limits.history_max_messages = 100;
    let server = TestServer::start_with(config).await;
    let (watcher, mut events) = server.login("watcher").await;
    watcher
        .subscribe("c", SubscribeOptions::default())
        .await
        .unwrap();
    let mut raw = RawSession::login(&server, "raw").await;
    let messages = vec![
        Payload::from("one"),
        Payload::Binary(vec![0; MAX + 1].into()),
        Payload::from("three"),
    ];
    let Ok(Response::PublishBatch { results, .. }) = raw.request(2, batch(messages)).await else {
        panic!("a batch answer");
    };
    assert_eq!(results.len(), 3);
    let batches = |server: &TestServer| {
        let m = server.metrics();
        (
            m.publish_batches.load(Ordering::Relaxed),
            m.publish_batched_messages.load(Ordering::Relaxed),
        )
    };
    assert_eq!(batches(&server), (1, 3), "one batch of three, counted");
    let stamps: Vec<u64> = [&results[0], &results[2]]
        .iter()
        .map(|r| *r.as_ref().unwrap())
        .collect();
    assert!(stamps[0] < stamps[1], "stored messages get distinct times");
    let too_long = results[1].as_ref().unwrap_err();
    assert_eq!(
        too_long.code,
        ErrorCode::ChannelMessageLengthExceedLimitation
    );
    // Delivered as two publishes would be, with the batch's custom type...
    for (text, stamp) in ["one", "three"].into_iter().zip(&stamps) {
        let m = expect_message(&mut events).await;
        assert_eq!(
            (
                m.message.as_text(),
                m.custom_type.as_str(),
                m.publisher.as_str()
            ),
            (Some(text), "note", "raw")
        );
        assert_eq!(m.timestamp, *stamp);
    }
    // ...and stored, newest first.
    let page = watcher
        .history()
        .get_messages("c", ChannelType::Message, Default::default())
        .await
        .unwrap();
    let stored: Vec<u64> = page.message_list.iter().map(|m| m.timestamp).collect();
    assert_eq!(stored, [stamps[1], stamps[0]]);

    // More than 64 messages, or none: refused as a whole, nothing published.
    for (id, count) in [(3, 65), (4, 0)] {
        let refused = raw
            .request(id, batch(vec![Payload::from("x"); count]))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidParameter);
    }
    assert_eq!(batches(&server), (1, 3), "refused batches are not counted");
    // Before login: refused as every request is.
    let mut fresh = RawSession::hello(&server).await;
    let early = fresh
        .request(1, batch(vec![Payload::from("x")]))
        .await
        .unwrap_err();
    assert_eq!(early.code, ErrorCode::NotLogin);
    // Nothing of the refused batches arrived: the next message is a later one.
    watcher
        .publish("c", "after", PublishOptions::default())
        .await
        .unwrap();
    let m = expect_message(&mut events).await;
    assert_eq!(m.message.as_text(), Some("after"));
}
