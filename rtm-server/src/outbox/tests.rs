//! Unit tests of the outbox: queueing, lanes, the kept window, resumes and the bounds.

use rtm_proto::{ChannelType, Event, MessageEvent, encode_frame};

use super::*;

/// A frame the outbox does not look into: lane 0, told apart by its one byte.
fn one(b: u8) -> Bytes {
    Bytes::from(vec![b])
}

/// A message event of `channel` carrying `b`.
fn message(channel: &str, b: u8) -> Bytes {
    stamped(channel, b, 0)
}

fn byte_of(frame: &Bytes) -> u8 {
    let body = frame
        .get(rtm_proto::frame::HEADER_LEN..)
        .unwrap_or_default();
    match ServerMsg::decode(body) {
        Ok(ServerMsg::Event(Event::Message(m))) => m.message.as_bytes()[0],
        _ => frame[0],
    }
}

fn frames(next: Next) -> Vec<u8> {
    match next {
        Next::Frames(f) => f.iter().map(|(_, b)| byte_of(b)).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn overflow_closes_as_slow_consumer_once() {
    let metrics = Arc::new(Metrics::default());
    let (outbox, mut rx) = Outbox::new(2, metrics.clone());
    assert_eq!(outbox.push(one(1)), Pushed::Queued);
    assert_eq!(outbox.push(one(2)), Pushed::Queued);
    assert_eq!(outbox.push(one(3)), Pushed::Overflowed);
    assert_eq!(outbox.push(one(4)), Pushed::Overflowed);
    assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 2);
    assert!(matches!(
        rx.next(8).await,
        Next::Close(CloseReason::SlowConsumer)
    ));
}

#[tokio::test]
async fn rewind_resends_what_was_not_acknowledged() {
    let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
    for i in 0..6u8 {
        outbox.push(one(i));
    }
    assert_eq!(frames(rx.next(4).await), [0, 1, 2, 3]);
    outbox.ack(&[2]);
    // The client got frames 0..3; 3 was lost with the connection, 4 and 5 never left.
    assert_eq!(rx.rewind(&[3]), [3]);
    assert_eq!(frames(rx.next(16).await), [3, 4, 5]);
    // A client that says it has more than was written is held to what was written.
    assert_eq!(rx.rewind(&[100]), [6]);
    outbox.push(one(6));
    assert_eq!(frames(rx.next(16).await), [6]);
}

#[tokio::test]
async fn frames_beyond_the_kept_window_are_reported_lost() {
    let (outbox, mut rx) = Outbox::new(2, Arc::new(Metrics::default()));
    for round in 0..3u8 {
        outbox.push(one(2 * round));
        outbox.push(one(2 * round + 1));
        assert_eq!(frames(rx.next(8).await), [2 * round, 2 * round + 1]);
    }
    // Six written, only the last two kept: a client that got one frame lost three.
    assert_eq!(rx.rewind(&[1]), [4]);
    assert_eq!(frames(rx.next(8).await), [4, 5]);
}

#[tokio::test]
async fn lanes_are_counted_and_rewound_separately() {
    let (outbox, mut rx) = Outbox::with_lanes(16, 16, Arc::new(Metrics::default()));
    // "room" and "side0" share lane 10, "side1" is on lane 13, "side2" on lane 4.
    let sent = [
        ("room", 0),
        ("side1", 1),
        ("side0", 2),
        ("side2", 3),
        ("room", 4),
    ];
    for (channel, b) in sent {
        outbox.push(message(channel, b));
    }
    match rx.next(16).await {
        Next::Frames(f) => {
            let lanes: Vec<u8> = f.iter().map(|(lane, _)| *lane).collect();
            assert_eq!(lanes, [10, 13, 10, 4, 10]);
        }
        other => panic!("{other:?}"),
    }
    // The client got two frames of lane 10 and the one of lane 13, none of lane 4.
    let mut received = vec![0; 16];
    received[10] = 2;
    received[13] = 1;
    let next = rx.rewind(&received);
    assert_eq!((next[4], next[10], next[13]), (0, 2, 1));
    // Held: the two frames to send again, nothing kept.
    let again = message("side2", 3).len() + message("room", 4).len();
    assert_eq!(rx.held_bytes(), again);
    // Lane 4's frame and lane 10's third come again, in lane order.
    assert_eq!(frames(rx.next(16).await), [3, 4]);
}

#[test]
fn a_channel_always_gets_the_same_lane() {
    assert_eq!(lane_of(&message("room", 1), 16), 10);
    assert_eq!(lane_of(&message("room", 2), 16), 10);
    assert_eq!(lane_of(&message("room", 2), 4), 10 & 3);
    assert_eq!(lane_of(&message("room", 2), 1), 0);
    // Not a message event: lane 0.
    assert_eq!(lane_of(&one(9), 16), 0);
}

/// The channel, payload byte and timestamp of message frames, and the lost-message notices.
fn described(next: Next) -> Vec<String> {
    let Next::Frames(frames) = next else {
        panic!("{next:?}")
    };
    frames
        .iter()
        .map(|(_, frame)| match ServerMsg::decode(&frame[4..]).unwrap() {
            ServerMsg::Event(Event::Message(m)) => {
                format!("{}:{}", m.channel_name, m.message.as_bytes()[0])
            }
            ServerMsg::Event(Event::MessagesLost(l)) => {
                format!("lost {} {} {}..{}", l.channel_name, l.count, l.from, l.to)
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_resume_says_which_messages_were_lost_before_the_rest() {
    let (outbox, mut rx) = Outbox::new(4, Arc::new(Metrics::default()));
    for i in 0..8u8 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        outbox.push(stamped(channel, i, 100 + u64::from(i)));
        rx.next(8).await;
    }
    // Eight written, the last four kept (4..8); the client got 0 and 1: 2 and 3 are lost.
    // (One lane: the test's outbox.)
    assert_eq!(rx.rewind(&[2]), [4]);
    assert_eq!(
        described(rx.next(16).await),
        [
            "lost a 1 102..102",
            "lost b 1 103..103",
            "a:4",
            "b:5",
            "a:6",
            "b:7"
        ]
    );
    // Reported once: another resume finds nothing lost (and nothing to send again).
    outbox.ack(&[10]);
    assert_eq!(rx.rewind(&[10]), [10]);
    outbox.push(stamped("a", 9, 200));
    assert_eq!(described(rx.next(16).await), ["a:9"]);
}

/// A message event of `channel` carrying `b`, at `timestamp`.
fn stamped(channel: &str, b: u8, timestamp: u64) -> Bytes {
    encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
        channel_type: ChannelType::Message,
        channel_name: channel.into(),
        topic_name: String::new(),
        message: vec![b].into(),
        custom_type: String::new(),
        publisher: "p".into(),
        timestamp,
    })))
}

#[tokio::test]
async fn a_session_that_missed_more_than_it_can_account_for_cannot_resume() {
    let metrics = Arc::new(Metrics::default());
    let (outbox, mut rx) = Outbox::new(2, metrics.clone());
    // Two kept and two dropped ones on record: frames 0..6 written, records of 2 and 3,
    // the records of 0 and 1 given up.
    for i in 0..6u8 {
        outbox.push(message("a", i));
        rx.next(8).await;
    }
    // A client without 0 and 1 could not be told about them.
    assert!(!rx.can_resume(&[0]));
    assert!(!rx.can_resume(&[1]));
    assert!(rx.can_resume(&[2]));
    // Acknowledged or not, a healthy session is never closed for it.
    assert!(!outbox.is_closing());
    assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_session_holding_more_bytes_than_allowed_is_a_slow_consumer() {
    let metrics = Arc::new(Metrics::default());
    let (outbox, mut rx) = Outbox::bounded(4096, 1000, 1, metrics.clone());
    let big = |b: u8| Bytes::from(vec![b; 300]);
    for b in 0..3 {
        assert_eq!(outbox.push(big(b)), Pushed::Queued);
    }
    // Taken by the writer and never acknowledged, they are still held.
    assert_eq!(frames(rx.next(8).await).len(), 3);
    assert_eq!(rx.held_bytes(), 900);
    assert_eq!(outbox.push(big(3)), Pushed::Overflowed);
    assert!(matches!(
        rx.next(8).await,
        Next::Close(CloseReason::SlowConsumer)
    ));
    assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn acknowledged_and_received_bytes_are_no_longer_held() {
    let (outbox, mut rx) = Outbox::bounded(4096, 1000, 1, Arc::new(Metrics::default()));
    let big = |b: u8| Bytes::from(vec![b; 300]);
    for round in 0..10u8 {
        for b in 0..3 {
            assert_eq!(outbox.push(big(3 * round + b)), Pushed::Queued);
        }
        assert_eq!(frames(rx.next(8).await).len(), 3);
        outbox.ack(&[3 * u64::from(round) + 3]);
        assert_eq!(rx.held_bytes(), 0);
    }
    // A resume forgets what the client says it has, and keeps the rest for it.
    for b in 0..3 {
        outbox.push(big(b));
    }
    rx.next(8).await;
    rx.rewind(&[32]);
    assert_eq!(rx.held_bytes(), 300);
    // Frames given up beyond the kept window are not held either.
    let (outbox, mut rx) = Outbox::bounded(2, 1000, 1, Arc::new(Metrics::default()));
    for b in 0..9 {
        outbox.push(big(b));
        rx.next(8).await;
    }
    assert_eq!(rx.held_bytes(), 600);
}

#[test]
fn frames_pushed_together_are_queued_together_or_not_at_all() {
    let metrics = Arc::new(Metrics::default());
    let (outbox, _rx) = Outbox::new(4, metrics.clone());
    assert_eq!(outbox.push_all(vec![one(1), one(2)]), Pushed::Queued);
    assert_eq!(
        outbox.push_all(vec![one(3), one(4), one(5)]),
        Pushed::Overflowed
    );
    assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 3);
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_slow_consumer_line_is_the_writers_and_names_its_session() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (outbox, mut rx) = Outbox::new(1, Arc::new(Metrics::default()));
        outbox.set_owner("s7 (app/slow-bob)");
        tracing::info_span!("publisher", user = "alice").in_scope(|| {
            outbox.push(one(1));
            assert_eq!(outbox.push(one(2)), Pushed::Overflowed);
        });
        let writer = tracing::info_span!("conn", remote = "10.0.0.7:4000");
        let next = runtime.block_on(tracing::Instrument::instrument(rx.next(8), writer));
        assert!(matches!(next, Next::Close(CloseReason::SlowConsumer)));
    });
    let text = String::from_utf8(lock(&log.0).clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("slow consumer"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("s7 (app/slow-bob)"), "{text}");
    assert!(
        lines[0].contains("conn{remote=\"10.0.0.7:4000\"}"),
        "{text}"
    );
    assert!(!lines[0].contains("alice"), "{text}");
}

#[tokio::test]
async fn frames_come_out_in_order_and_batched() {
    let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
    for i in 0..5u8 {
        outbox.push(one(i));
    }
    assert_eq!(frames(rx.next(3).await), [0, 1, 2]);
    assert_eq!(frames(rx.next(8).await), [3, 4]);
}
