//! The one clock, the messages' payload, what a subscriber saw, and CPU and memory from /proc.

use super::*;

/// The one clock: nanoseconds since the process started measuring.
pub(crate) fn clock() -> u64 {
    instant_ns(Instant::now())
}

/// `at` on the same clock: nanoseconds since the one base instant.
pub(crate) fn instant_ns(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// A message: sequence number, scheduled send time (ns), then padding.
pub(crate) fn payload(seq: u64, scheduled_ns: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(16));
    b.put_u64_le(seq);
    b.put_u64_le(scheduled_ns);
    b.resize(size.max(16), 0x5a);
    b.freeze()
}

pub(crate) fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let scheduled = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, scheduled))
}

/// rtm subscriptions without presence events: the peers have none, and a thousand
/// subscribers joining would otherwise send each other a thousand snapshots and interval events
/// that the comparison does not measure.
pub(crate) fn pubsub_only() -> SubscribeOptions {
    SubscribeOptions {
        with_presence: false,
        ..Default::default()
    }
}

/// What one subscriber saw.
pub(crate) struct Seen {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) received: u64,
    pub(crate) measured: u64,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Reads `sub` until `expected` messages arrived or `deadline` passed, recording latencies of
/// messages with a sequence number of at least `first_measured`.
pub(crate) async fn consume(
    mut sub: Sub,
    first_measured: u64,
    expected: u64,
    deadline: tokio::time::Instant,
) -> Seen {
    let mut seen = Seen {
        histogram: new_histogram(),
        received: 0,
        measured: 0,
    };
    while seen.received < expected {
        let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let now = clock();
        let Some((seq, scheduled)) = parse(&bytes) else {
            continue;
        };
        seen.received += 1;
        if seq >= first_measured {
            seen.measured += 1;
            let micros = now.saturating_sub(scheduled) / 1000;
            let _ = seen.histogram.record(micros.max(1));
        }
    }
    drop(sub);
    seen
}

/// Waits until `due`: sleeps most of the way, then spins (the OS timer is too coarse for 1 ms
/// schedules).
pub(crate) fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// CPU seconds used so far by a process (utime + stime from /proc).
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat, counted from the state field (3rd) here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident memory of a process, in KiB.
pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) struct Cpu {
    pub(crate) server: Option<f64>,
    pub(crate) client: Option<f64>,
    pub(crate) at: Instant,
}

impl Cpu {
    pub(crate) fn start(pid: Option<u32>) -> Self {
        Self {
            server: cpu_seconds(pid),
            client: cpu_seconds(None),
            at: Instant::now(),
        }
    }

    /// (server %, client %) of one core since `start`.
    pub(crate) fn percent(&self, pid: Option<u32>) -> (Option<f64>, Option<f64>) {
        let secs = self.at.elapsed().as_secs_f64();
        let pct = |before: Option<f64>, after: Option<f64>| {
            Some(((after? - before?) / secs * 100.0 * 10.0).round() / 10.0)
        };
        (
            pct(self.server, cpu_seconds(pid)),
            pct(self.client, cpu_seconds(None)),
        )
    }
}

/// CPU microseconds per item: `pct` % of one core for `secs` seconds, spread over `items`
/// (deliveries, or messages received). Far less moved by a busy machine than latency, and what
/// decides how many cores a deployment needs.
pub(crate) fn us_per(pct: Option<f64>, secs: f64, items: u64) -> Option<f64> {
    let pct = pct?;
    (items > 0).then(|| (pct / 100.0 * secs * 1e6 / items as f64 * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::us_per;

    #[test]
    pub(crate) fn cpu_per_item_is_cpu_time_over_items() {
        // 90 % of a core for 5 s over 500 000 deliveries: 9 µs each.
        assert_eq!(us_per(Some(90.0), 5.0, 500_000), Some(9.0));
        assert_eq!(us_per(Some(12.5), 2.0, 3), Some(83333.33));
        assert_eq!(us_per(None, 5.0, 10), None);
        assert_eq!(us_per(Some(50.0), 5.0, 0), None);
    }
}
