//! `rtm bench`: a quick round-trip check. The client subscribes to a channel of its own and
//! publishes messages one at a time, each sent when the previous one came back and no faster
//! than `--rate` (the app's `publish_rate`, 60 a second by default, refuses more); it prints
//! the round trip's percentiles and the rate. A check that the server answers and how fast, from
//! where the command runs; `docs/performance.md` measures the server itself.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtm_client::{EventStream, PublishOptions, RtmClient, RtmEvent, SubscribeOptions};

/// The value at `q` (0..1) of sorted `samples`.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `count` round trips of `size`-byte messages, at most `rate` a second.
pub(crate) async fn run(
    rtm: &RtmClient,
    events: &mut EventStream,
    count: usize,
    size: usize,
    rate: u32,
) -> anyhow::Result<()> {
    if count == 0 || rate == 0 {
        bail!("--count and --rate must be above 0");
    }
    let spacing = Duration::from_secs(1) / rate;
    let channel = format!("bench-{}", std::process::id());
    rtm.subscribe(&channel, SubscribeOptions::default()).await?;
    let payload = vec![b'x'; size];
    let mut round_trips = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        // Paced from the start: the n-th message leaves no earlier than n / rate seconds in.
        tokio::time::sleep_until((started + spacing * n as u32).into()).await;
        let sent = Instant::now();
        rtm.publish(&channel, payload.clone(), PublishOptions::default())
            .await
            .with_context(|| format!("publishing message {n}"))?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .with_context(|| format!("message {n} did not come back within 10 s"))?;
            match event {
                Some(RtmEvent::Message(m)) if m.channel_name == channel => break,
                Some(_) => {}
                None => bail!("the client stopped"),
            }
        }
        round_trips.push(sent.elapsed());
    }
    let took = started.elapsed();
    rtm.unsubscribe(&channel).await?;
    round_trips.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{count} round trips of {size} bytes in {:.2} s ({:.0}/s): p50 {:.3} ms, p90 {:.3} ms, \
         p99 {:.3} ms, max {:.3} ms",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
        ms(percentile(&round_trips, 0.50)),
        ms(percentile(&round_trips, 0.90)),
        ms(percentile(&round_trips, 0.99)),
        ms(percentile(&round_trips, 1.0)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank_that_covers_the_share() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples[..1], 0.5), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
