//! What the operators' metrics add to each request: the latency histogram by operation, the
//! published-by-kind counter, a connection's open and close. Measured alone, because a few
//! tens of nanoseconds vanish in the noise of a load test where one publish costs about 100 µs
//! of server CPU (docs/performance.md).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rtm_proto::ErrorCode;
use rtm_server::Metrics;
use rtm_server::metrics::{MessageKind, Transport};

fn metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    let m = Metrics::default();
    let took = Duration::from_micros(37);
    group.bench_function("request_took", |b| {
        b.iter(|| m.request_took(std::hint::black_box("publish"), took));
    });
    group.bench_function("published", |b| {
        b.iter(|| m.published(std::hint::black_box(MessageKind::message)));
    });
    // Everything a publish request adds: its timing, and its count by kind.
    group.bench_function("one_publish", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            m.published(MessageKind::message);
            m.request_took("publish", started.elapsed());
        });
    });
    group.bench_function("connection_open_close", |b| {
        b.iter(|| drop(m.connection_opened(std::hint::black_box(Transport::quic))));
    });
    group.bench_function("login_refused", |b| {
        b.iter(|| m.login_refused(std::hint::black_box(ErrorCode::InvalidToken)));
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
