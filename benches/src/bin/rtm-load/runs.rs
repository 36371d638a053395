//! The open-loop runs: fan-out at a rate, and throughput with a window of messages in flight.

use super::*;

pub(crate) async fn rate_run(
    args: &Args,
    target: &mut Target,
    server_pid: Option<u32>,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let (groups, subs_per_group) = match args.workload {
        Workload::Channels => (args.pairs, 1),
        _ => (1, args.subs),
    };
    let total_rate = args.rate as f64;
    let warm = (args.warmup * total_rate) as u64;
    let total = warm + (args.duration * total_rate) as u64;
    // Message i goes to channel i % groups.
    let per_group =
        |g: usize| (total / groups as u64) + u64::from((g as u64) < total % groups as u64);

    eprintln!(
        "connecting {} subscribers and {groups} publishers ...",
        groups * subs_per_group
    );
    let mut subs = Vec::new();
    let mut n = 0;
    for g in 0..groups {
        for _ in 0..subs_per_group {
            subs.push((g, target.subscriber(n, &format!("load{g}")).await?));
            n += 1;
        }
    }
    let mut pubs = Vec::new();
    for g in 0..groups {
        pubs.push(target.publisher(g).await?);
    }
    // The storm: clients of another channel, all disconnected at once halfway through.
    let mut storm = Vec::with_capacity(args.storm);
    for i in 0..args.storm {
        storm.push(target.subscriber(n + i, "storm").await?);
        if (i + 1) % 1000 == 0 {
            eprintln!("{} storm clients ...", i + 1);
        }
    }
    let storm_at = (!storm.is_empty()).then(|| warm + (total - warm) / 2);
    let (storm_tx, storm_rx) = tokio::sync::oneshot::channel::<()>();
    let storm_task = tokio::spawn(async move {
        if storm_rx.await.is_ok() {
            let started = Instant::now();
            drop(storm);
            Some(started.elapsed())
        } else {
            None
        }
    });

    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(args.warmup + args.duration + 1.0)
        + Duration::from_secs(5 + (groups * subs_per_group / 200) as u64);
    let mut consumers = JoinSet::new();
    for (g, sub) in subs {
        consumers.spawn(consume(sub, warm, per_group(g), deadline));
    }

    let errors = Arc::new(AtomicU64::new(0));
    let (answers_tx, mut answers_rx) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let checker = {
        let errors = errors.clone();
        tokio::spawn(async move {
            while let Some(answer) = answers_rx.recv().await {
                if !answer.await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let rt = Handle::current();
    let size = args.size;
    let (cpu_tx, cpu_rx) = tokio::sync::oneshot::channel();
    let publisher = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(100);
        let interval = 1.0 / total_rate;
        let mut cpu = None;
        let mut measure_start = None;
        let mut storm_tx = Some(storm_tx);
        for i in 0..total {
            if Some(i) == storm_at
                && let Some(tx) = storm_tx.take()
            {
                let _ = tx.send(());
            }
            let due = start + Duration::from_secs_f64(i as f64 * interval);
            wait_until(due);
            if i == warm {
                cpu = Some(Cpu::start(server_pid));
                measure_start = Some(Instant::now());
            }
            let g = (i % groups as u64) as usize;
            let seq = i;
            let channel = format!("load{g}");
            if let Some(answer) = pubs[g].send(&rt, &channel, payload(seq, instant_ns(due), size)) {
                let _ = answers_tx.send(answer);
            }
        }
        let elapsed = measure_start.map(|s| s.elapsed());
        let _ = cpu_tx.send((cpu.map(|c| c.percent(server_pid)), elapsed));
        drop(answers_tx);
        pubs
    });
    let (cpu, elapsed) = cpu_rx.await.context("publisher thread")?;
    let mut histogram = new_histogram();
    let (mut received, mut measured) = (0u64, 0u64);
    while let Some(seen) = consumers.join_next().await {
        let seen = seen?;
        histogram.add(&seen.histogram)?;
        received += seen.received;
        measured += seen.measured;
    }
    checker.await?;
    let _pubs = tokio::task::spawn_blocking(move || publisher.join()).await?;
    if let Some(dropped_in) = storm_task.await? {
        report["storm"] = args.storm.into();
        // How long the load generator took to drop the storm's clients (each closes its
        // connection); the server's side of it shows in the fan-out's latency.
        report["storm_drop_ms"] = (dropped_in.as_secs_f64() * 1000.0).round().into();
    }
    // Every subscriber of a group receives that group's share of the measured messages.
    let expected_measured = (total - warm) * subs_per_group as u64;
    let measured_secs = elapsed.map_or(args.duration, |e| e.as_secs_f64());
    report["subs"] = (groups * subs_per_group).into();
    report["publishers"] = groups.into();
    report["rate"] = args.rate.into();
    report["duration_s"] = args.duration.into();
    report["expected"] = expected_measured.into();
    report["delivered"] = measured.into();
    report["received_total"] = received.into();
    report["publish_errors"] = errors.load(Ordering::Relaxed).into();
    report["achieved_rate"] = (((total - warm) as f64 / measured_secs).round()).into();
    quantiles(&histogram, report);
    if let Some((server, client)) = cpu {
        report["server_cpu_pct"] = server.into();
        report["client_cpu_pct"] = client.into();
        // The CPU window is the publishing window, the deliveries those of its messages.
        report["server_us_per_delivery"] = us_per(server, measured_secs, measured).into();
        report["client_us_per_delivery"] = us_per(client, measured_secs, measured).into();
    }
    report["server_rss_kib"] = rss_kib(server_pid).into();
    eprintln!(
        "{:>6} {:>10} subs={:<5} rate={:<6} size={:<5} delivered {}/{}  p50 {}µs p90 {}µs p99 {}µs p99.9 {}µs max {}µs  cpu server {}% client {}%  per delivery server {}µs client {}µs",
        report["system"].as_str().unwrap_or(""),
        report["workload"].as_str().unwrap_or(""),
        groups * subs_per_group,
        args.rate,
        args.size,
        measured,
        expected_measured,
        report["p50_us"],
        report["p90_us"],
        report["p99_us"],
        report["p999_us"],
        report["max_us"],
        report["server_cpu_pct"],
        report["client_cpu_pct"],
        report["server_us_per_delivery"],
        report["client_us_per_delivery"],
    );
    Ok(())
}

pub(crate) async fn throughput_run(
    args: &Args,
    target: &mut Target,
    server_pid: Option<u32>,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let sub = target.subscriber(0, "tput").await?;
    let publisher = target.publisher(0).await?;
    let size = args.size;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // End-to-end flow control, the same for every system: at most WINDOW messages published
    // and not yet received. Without it a publisher outruns the subscriber, and each system's
    // slow-consumer protection (rtm's and NATS's disconnect, Redis's output buffer limit) ends
    // the run instead of measuring it.
    let window = Arc::new(Window::default());
    let sending = {
        let (stop, sent, window) = (stop.clone(), sent.clone(), window.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            match publisher {
                Pub::Rtm(client) => {
                    // Keep answers outstanding, as a pipelining application would.
                    let mut answers = VecDeque::new();
                    while !stop.load(Ordering::Relaxed) {
                        window.wait_for_room(seq).await;
                        let p = payload(seq, clock(), size);
                        answers.push_back(client.publish("tput", p, PublishOptions::default()));
                        seq += 1;
                        if answers.len() >= 2048
                            && let Some(answer) = answers.pop_front()
                        {
                            answer.await?;
                        }
                    }
                    for answer in answers {
                        answer.await?;
                    }
                }
                Pub::RtmTopic(_) => anyhow::bail!("the throughput workload uses channels"),
                Pub::Nats(client) => {
                    while !stop.load(Ordering::Relaxed) {
                        window.wait_for_room(seq).await;
                        client.publish("tput", payload(seq, clock(), size)).await?;
                        seq += 1;
                    }
                    client.flush().await?;
                }
                Pub::Redis(conn) => {
                    // Pipelines of 256 PUBLISH, four in flight.
                    let mut inflight = JoinSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        window.wait_for_room(seq + 256).await;
                        let mut pipe = redis::pipe();
                        for _ in 0..256 {
                            pipe.publish("tput", payload(seq, clock(), size).as_ref())
                                .ignore();
                            seq += 1;
                        }
                        let mut conn = conn.clone();
                        inflight.spawn(async move { pipe.query_async::<()>(&mut conn).await });
                        if inflight.len() >= 4
                            && let Some(done) = inflight.join_next().await
                        {
                            done??;
                        }
                    }
                    while let Some(done) = inflight.join_next().await {
                        done??;
                    }
                }
            }
            sent.store(seq, Ordering::Relaxed);
            anyhow::Ok(())
        })
    };
    // Count what arrives in the measured window.
    let mut sub = sub;
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warm_until + Duration::from_secs_f64(args.duration);
    let mut histogram = new_histogram();
    let mut counted = 0u64;
    let mut cpu = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let left = tokio::time::Instant::from_std(end);
        let Ok(Some(bytes)) = tokio::time::timeout_at(left, sub.next()).await else {
            break;
        };
        window.received();
        if Instant::now() < warm_until {
            continue;
        }
        if cpu.is_none() {
            cpu = Some(Cpu::start(server_pid));
        }
        counted += 1;
        if let Some((_, sent_at)) = parse(&bytes) {
            let _ = histogram.record((clock().saturating_sub(sent_at) / 1000).max(1));
        }
    }
    let cpu = cpu.map(|c| c.percent(server_pid));
    stop.store(true, Ordering::Relaxed);
    window.open();
    // Drain so the publisher's last answers can come back.
    let drain = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(_)) = tokio::time::timeout_at(drain, sub.next()).await {
        window.received();
        if sending.is_finished() {
            break;
        }
    }
    sending.await??;
    report["subs"] = 1.into();
    report["duration_s"] = args.duration.into();
    report["msgs_per_s"] = ((counted as f64 / args.duration).round()).into();
    report["sent_total"] = sent.load(Ordering::Relaxed).into();
    quantiles(&histogram, report);
    if let Some((server, client)) = cpu {
        report["server_cpu_pct"] = server.into();
        report["client_cpu_pct"] = client.into();
        report["server_us_per_delivery"] = us_per(server, args.duration, counted).into();
        report["client_us_per_delivery"] = us_per(client, args.duration, counted).into();
    }
    eprintln!(
        "{:>6} throughput size={}: {} msg/s delivered (latency from actual send: p50 {}µs p99 {}µs; per delivery server {}µs client {}µs)",
        report["system"].as_str().unwrap_or(""),
        args.size,
        report["msgs_per_s"],
        report["p50_us"],
        report["p99_us"],
        report["server_us_per_delivery"],
        report["client_us_per_delivery"],
    );
    Ok(())
}

/// Messages a throughput publisher may have in flight (sent, not yet received).
pub(crate) const WINDOW: u64 = 2_000;

#[derive(Default)]
pub(crate) struct Window {
    pub(crate) received: AtomicU64,
    pub(crate) open: std::sync::atomic::AtomicBool,
    pub(crate) notify: tokio::sync::Notify,
}

impl Window {
    pub(crate) fn received(&self) {
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(256) {
            self.notify.notify_one();
        }
    }

    /// Waits until message `seq` may be sent.
    pub(crate) async fn wait_for_room(&self, seq: u64) {
        while seq >= self.received.load(Ordering::Relaxed) + WINDOW
            && !self.open.load(Ordering::Relaxed)
        {
            let _ = tokio::time::timeout(Duration::from_millis(10), self.notify.notified()).await;
        }
    }

    /// Lets the publisher finish.
    pub(crate) fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }
}
