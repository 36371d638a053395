//! End-to-end over the test kit's lossy link: what QUIC's recovery must hide.

use rtm_client::{LoginOptions, PublishOptions, RtmClient, RtmEvent, SubscribeOptions};
use rtm_testkit::{LossyLink, TEST_APP_ID, TestServer, expect_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_loses_nothing_and_keeps_each_channel_in_order() {
    const CHANNELS: usize = 4;
    const MESSAGES: usize = 10_000;
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let subscriber = RtmClient::new(TEST_APP_ID, "sub", server.client_config_via(&link)).unwrap();
    let publisher = RtmClient::new(TEST_APP_ID, "pub", server.client_config_via(&link)).unwrap();
    let mut events = subscriber.events();
    subscriber.login(LoginOptions::default()).await.unwrap();
    publisher.login(LoginOptions::default()).await.unwrap();
    for c in 0..CHANNELS {
        subscriber
            .subscribe(&format!("lossy{c}"), SubscribeOptions::default())
            .await
            .unwrap();
    }
    link.set_loss(0.05);

    // Message i goes to channel i % CHANNELS and carries i; all are queued at once.
    let answers: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let channel = format!("lossy{}", i % CHANNELS);
            publisher.publish(
                &channel,
                (i as u32).to_be_bytes().to_vec(),
                PublishOptions::default(),
            )
        })
        .collect();
    let sending = tokio::spawn(async move {
        for answer in answers {
            answer.await.unwrap();
        }
    });
    let mut last: Vec<Option<u32>> = vec![None; CHANNELS];
    for _ in 0..MESSAGES {
        let m = expect_event(&mut events, "a message over the lossy link", |e| match e {
            RtmEvent::Message(m) => Some(m),
            _ => None,
        })
        .await;
        let c: usize = m.channel_name.trim_start_matches("lossy").parse().unwrap();
        let i = u32::from_be_bytes(m.message.as_bytes().try_into().unwrap());
        assert_eq!(i as usize % CHANNELS, c);
        if let Some(prev) = last[c] {
            assert_eq!(i, prev + CHANNELS as u32, "channel {c}: {i} after {prev}");
        } else {
            assert_eq!(i as usize, c, "channel {c} starts with its first message");
        }
        last[c] = Some(i);
    }
    sending.await.unwrap();
    assert!(
        link.dropped() > 0,
        "the link dropped nothing; the test proved nothing"
    );
}

#[tokio::test]
async fn a_cut_link_is_noticed_and_the_calls_fail() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let mut config = server.client_config_via(&link);
    config.request_timeout = std::time::Duration::from_millis(500);
    let client = RtmClient::new(TEST_APP_ID, "cut", config).unwrap();
    client.login(LoginOptions::default()).await.unwrap();
    client
        .subscribe("c", SubscribeOptions::default())
        .await
        .unwrap();
    link.cut();
    // No answer can come back: the call fails with the publish timeout code, not a hang.
    let err = client
        .publish("c", "into the void", PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        rtm_client::ErrorCode::ChannelPublishMessageTimeout
    );
    link.restore();
    client
        .publish("c", "back", PublishOptions::default())
        .await
        .unwrap();
}
