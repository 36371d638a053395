//! The server's fan-out path without the network: encode a message event once, and hand it to
//! the in-memory engine, which queues it to every subscriber's outbox. This is the per-publish
//! work the server does between reading a publish request and its writer tasks; a regression
//! here shows without a load test.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtm_proto::{
    ChannelType, Event, MessageEvent, Payload, ServerMsg, SubscribeOptions, encode_frame,
};
use rtm_server::Metrics;
use rtm_server::engine::{MemoryEngine, Router, SessionHandle, SessionId};
use rtm_server::outbox::{Outbox, OutboxRx};

/// Runs a future that completes without waiting (the in-memory engine's always do).
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the in-memory engine never waits"),
    }
}

/// Queued frames are taken out every this many publishes (outside the timing).
const DRAIN_EVERY: u64 = 512;

/// An engine with `subscribers` sessions in channel "room", and their queues.
fn room_of(
    subscribers: usize,
) -> (
    MemoryEngine,
    Arc<Metrics>,
    Vec<SessionHandle>,
    Vec<OutboxRx>,
) {
    let engine = MemoryEngine::new();
    let metrics = Arc::new(Metrics::default());
    let mut sessions = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..subscribers {
        let (outbox, rx) = Outbox::with_lanes(DRAIN_EVERY as usize, 16, metrics.clone());
        let session = SessionHandle::new(SessionId(i as u64), "app", &format!("u{i}"), outbox);
        now(engine.attach(&session)).expect("attach");
        now(engine.subscribe(&session, "room", SubscribeOptions::default())).expect("subscribe");
        sessions.push(session);
        receivers.push(rx);
    }
    (engine, metrics, sessions, receivers)
}

/// Runs `step` `iters` times and returns the time the steps took; every `DRAIN_EVERY` steps
/// the queues are emptied, outside the timing.
fn timed(iters: u64, receivers: &mut [OutboxRx], mut step: impl FnMut()) -> Duration {
    let mut busy = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let batch = (iters - done).min(DRAIN_EVERY);
        let start = Instant::now();
        for _ in 0..batch {
            step();
        }
        busy += start.elapsed();
        for rx in receivers.iter_mut() {
            rx.drain();
        }
        done += batch;
    }
    busy
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in [1usize, 100, 1000] {
        let (engine, metrics, _sessions, mut receivers) = room_of(subscribers);
        let payload = Bytes::from(vec![7u8; 100]);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(
            BenchmarkId::new("encode_and_enqueue_100B", subscribers),
            |b| {
                b.iter_custom(|iters| {
                    timed(iters, &mut receivers, || {
                        let frame = encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
                            channel_type: ChannelType::Message,
                            channel_name: "room".into(),
                            topic_name: String::new(),
                            message: Payload::Binary(payload.clone()),
                            custom_type: String::new(),
                            publisher: "publisher".into(),
                            timestamp: 1_795_719_793_000,
                        })));
                        let delivery = now(engine.publish("app", "room", frame)).expect("publish");
                        debug_assert_eq!(delivery.queued, subscribers);
                    })
                })
            },
        );
        assert_eq!(
            metrics
                .frames_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    group.finish();
}

/// Joins and leaves in a busy channel: one subscriber leaves and joins again, in a channel of
/// N (the cost a join/leave storm puts under the engine's lock); and the same followed by one
/// publish (which then copies the changed subscriber list once).
fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    for subscribers in [100usize, 1000, 10_000] {
        let (engine, _metrics, sessions, mut receivers) = room_of(subscribers);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("leave_and_join", subscribers), |b| {
            b.iter(|| {
                let session = &sessions[next % subscribers];
                next += 1;
                now(engine.unsubscribe(session, "room")).expect("unsubscribe");
                now(engine.subscribe(session, "room", SubscribeOptions::default()))
                    .expect("subscribe");
            })
        });
        let frame = Bytes::from_static(b"0123456789");
        group.bench_function(
            BenchmarkId::new("leave_join_and_publish", subscribers),
            |b| {
                b.iter_custom(|iters| {
                    timed(iters, &mut receivers, || {
                        let session = &sessions[next % subscribers];
                        next += 1;
                        now(engine.unsubscribe(session, "room")).expect("unsubscribe");
                        now(engine.subscribe(session, "room", SubscribeOptions::default()))
                            .expect("subscribe");
                        now(engine.publish("app", "room", frame.clone())).expect("publish");
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fanout, churn);
criterion_main!(benches);
