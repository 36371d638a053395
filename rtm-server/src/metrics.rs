//! Counters the server keeps about itself. A Prometheus endpoint will read them later; tests
//! and the load generator read them now through [`crate::ServerHandle::metrics`].

use std::sync::atomic::AtomicU64;

/// Server-wide counters. All are monotonic except `sessions` and `sessions_parked`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted (completed handshakes).
    pub connections: AtomicU64,
    /// Sessions logged in now.
    pub sessions: AtomicU64,
    /// Messages published (message and user channels).
    pub messages_published: AtomicU64,
    /// Frames queued to subscribers.
    pub frames_delivered: AtomicU64,
    /// Frames not queued because a subscriber's queue was full.
    pub frames_dropped: AtomicU64,
    /// Sessions closed because their outbound queue overflowed.
    pub slow_consumer_disconnects: AtomicU64,
    /// Frames from clients that did not decode.
    pub malformed_frames: AtomicU64,
    /// Frames from clients over the size limit.
    pub oversized_frames: AtomicU64,
    /// Publishes refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Sessions kept now after losing their connection, waiting for a resume.
    pub sessions_parked: AtomicU64,
    /// Sessions resumed on a new connection.
    pub sessions_resumed: AtomicU64,
    /// Kept sessions ended because no resume came within their presence timeout.
    pub sessions_timed_out: AtomicU64,
    /// New connections refused: the server or their address had too many.
    pub connections_refused: AtomicU64,
    /// New connections asked to prove their address (QUIC Retry) because handshakes came
    /// faster than `handshake_rate`.
    pub handshakes_retried: AtomicU64,
    /// Connections lost because the client fell silent (the QUIC idle timeout: its heartbeat
    /// interval + 10 s without a packet).
    pub heartbeat_timeouts: AtomicU64,
}
