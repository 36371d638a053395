//! The other workloads: presence joins, idle connections, connections before login, lossy links.

use super::*;

/// Joins into a channel that already has `--conns` present users (`docs/performance.md`).
pub(crate) async fn presence_run(
    args: &Args,
    target: &mut Target,
    server_pid: Option<u32>,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    if target.system != System::Rtm {
        bail!("the presence workload is rtm's own");
    }
    const CHANNEL: &str = "big";
    const OBSERVERS: usize = 10;
    let login = |target: &mut Target, n: usize, name: String| {
        let config = target.rtm_config(n, target.addr);
        async move {
            let client = RtmClient::new("loadapp", name, config?)?;
            client.login(LoginOptions::default()).await?;
            anyhow::Ok(client)
        }
    };
    eprintln!("connecting {} present users ...", args.conns);
    let mut present = Vec::with_capacity(args.conns);
    for n in 0..args.conns {
        let client = login(target, n, format!("p{n:05}")).await?;
        client.subscribe(CHANNEL, pubsub_only()).await?;
        present.push(client);
        if n % 1000 == 999 {
            eprintln!("{} present ...", n + 1);
        }
    }
    let mut observers = Vec::new();
    for n in 0..OBSERVERS {
        let client = login(target, args.conns + n, format!("obs{n}")).await?;
        let events = client.events();
        client
            .subscribe(CHANNEL, SubscribeOptions::default())
            .await?;
        observers.push((client, events));
    }
    // Let the observers' own snapshots and join announcements pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (_, events) in &mut observers {
        while events.try_recv().is_some() {}
    }
    let mut joiners = Vec::with_capacity(args.joins);
    for n in 0..args.joins {
        let at = args.conns + OBSERVERS + n;
        let client = login(target, at, format!("j{n:04}")).await?;
        let events = client.events();
        joiners.push((client, events));
    }
    let mut answer = new_histogram();
    let mut snapshot = new_histogram();
    let mut snapshot_users = 0;
    let cpu = Cpu::start(server_pid);
    for (client, events) in &mut joiners {
        let started = Instant::now();
        client
            .subscribe(CHANNEL, SubscribeOptions::default())
            .await?;
        let _ = answer.record((started.elapsed().as_micros() as u64).max(1));
        let users = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = events.recv().await {
                if let RtmEvent::Presence(p) = event
                    && p.event_type == rtm_client::PresenceEventType::Snapshot
                {
                    return Some(p.snapshot.len());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("no snapshot")?;
        let _ = snapshot.record((started.elapsed().as_micros() as u64).max(1));
        snapshot_users = users;
    }
    let (server_cpu, client_cpu) = cpu.percent(server_pid);
    let mut observed = 0u64;
    for (_, events) in &mut observers {
        while let Some(event) = events.try_recv() {
            if matches!(event, RtmEvent::Presence(_)) {
                observed += 1;
            }
        }
    }
    report["present"] = args.conns.into();
    report["joins"] = args.joins.into();
    report["snapshot_users"] = snapshot_users.into();
    for (name, h) in [("answer", &answer), ("snapshot", &snapshot)] {
        report[format!("{name}_p50_us")] = h.value_at_quantile(0.5).into();
        report[format!("{name}_p99_us")] = h.value_at_quantile(0.99).into();
        report[format!("{name}_max_us")] = h.max().into();
    }
    report["observer_presence_events"] = observed.into();
    report["server_cpu_pct"] = server_cpu.into();
    report["client_cpu_pct"] = client_cpu.into();
    eprintln!(
        "   rtm presence present={} joins={}: answer p50 {}µs p99 {}µs; snapshot of {} users p50 {}µs p99 {}µs; {} presence events to {OBSERVERS} observers during the joins",
        args.conns,
        args.joins,
        report["answer_p50_us"],
        report["answer_p99_us"],
        snapshot_users,
        report["snapshot_p50_us"],
        report["snapshot_p99_us"],
        observed,
    );
    drop(present);
    Ok(())
}

pub(crate) async fn conns_run(
    args: &Args,
    target: &mut Target,
    server_pid: Option<u32>,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    // One connection first, so fixed costs (buffers, caches) are not counted per connection.
    let first = target.subscriber(0, "idle0").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server_pid);
    let started = Instant::now();
    let mut conns = vec![first];
    for n in 1..args.conns {
        conns.push(target.subscriber(n, &format!("idle{n}")).await?);
        if n % 1000 == 0 {
            eprintln!("{n} connections ...");
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server settle (allocations after handshakes, first keep-alives).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(server_pid);
    let cpu = Cpu::start(server_pid);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (idle_cpu, _) = cpu.percent(server_pid);
    report["idle_s"] = args.idle_secs.into();
    report["conns"] = args.conns.into();
    report["connect_s"] = ((connect_secs * 10.0).round() / 10.0).into();
    report["server_rss_before_kib"] = before.into();
    report["server_rss_after_kib"] = after.into();
    if let (Some(b), Some(a)) = (before, after) {
        let per = (a.saturating_sub(b)) as f64 / (args.conns - 1).max(1) as f64;
        report["server_kib_per_conn"] = ((per * 10.0).round() / 10.0).into();
    }
    report["server_idle_cpu_pct"] = idle_cpu.into();
    eprintln!(
        "{:>6} conns={}: server RSS {:?} -> {:?} KiB, {} KiB per connection, idle CPU {}%",
        report["system"].as_str().unwrap_or(""),
        args.conns,
        before,
        after,
        report["server_kib_per_conn"],
        report["server_idle_cpu_pct"],
    );
    drop(conns);
    Ok(())
}

pub(crate) async fn prelogin_run(
    args: &Args,
    target: &mut Target,
    server_pid: Option<u32>,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    if target.system != System::Rtm {
        bail!("the prelogin workload is rtm's own");
    }
    let hello = rtm_proto::encode_frame(&rtm_proto::ClientMsg::Hello(rtm_proto::Hello {
        version: rtm_proto::PROTOCOL_VERSION,
        agent: "rtm-load prelogin".into(),
    }));
    let flood = vec![0u8; args.flood_kib * 1024];
    // One connection first, so fixed costs are not counted per connection.
    let first = rtm_client::raw::connect(&target.rtm_config(0, target.addr)?).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server_pid);
    let started = Instant::now();
    let mut conns = vec![first];
    let mut tasks = JoinSet::new();
    for n in 1..args.conns {
        let conn = rtm_client::raw::connect(&target.rtm_config(n, target.addr)?).await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&hello).await?;
        // A frame header announcing more than is sent, then the bytes; and three more
        // streams with as much on each.
        let mut control = (flood.len() as u32 + 1).to_be_bytes().to_vec();
        control.extend_from_slice(&flood);
        if !flood.is_empty() {
            for _ in 0..3 {
                let (conn, flood) = (conn.clone(), flood.clone());
                tasks.spawn(async move {
                    if let Ok((mut extra, _recv)) = conn.open_bi().await {
                        let _ = extra.write_all(&flood).await;
                        std::future::pending::<()>().await;
                    }
                });
            }
        }
        tasks.spawn(async move {
            if control.len() > 4 {
                let _ = send.write_all(&control).await;
            }
            std::future::pending::<()>().await;
            drop((send, recv));
        });
        conns.push(conn);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Two seconds for the data to arrive, as in the measurement; the login timeout
    // (10 s by default) has not closed them yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server_pid);
    let sent: u64 = conns.iter().map(|c| c.stats().udp_tx.bytes).sum();
    report["conns"] = args.conns.into();
    report["flood_kib"] = args.flood_kib.into();
    report["connect_s"] = ((connect_secs * 10.0).round() / 10.0).into();
    report["client_sent_kib"] = (sent / 1024).into();
    report["server_rss_before_kib"] = before.into();
    report["server_rss_after_kib"] = after.into();
    if let (Some(b), Some(a)) = (before, after) {
        report["server_rss_growth_kib"] = a.saturating_sub(b).into();
    }
    eprintln!(
        "prelogin conns={} flood={} KiB: clients sent {} KiB; server RSS {:?} -> {:?} KiB",
        args.conns,
        args.flood_kib,
        sent / 1024,
        before,
        after
    );
    tasks.abort_all();
    drop(conns);
    Ok(())
}

pub(crate) async fn lossy_run(
    args: &Args,
    target: &mut Target,
    report: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let server = target
        ._server
        .as_ref()
        .context("the lossy workload runs rtm in-process (no --addr)")?;
    let link = rtm_testkit::LossyLink::start(server.addr()).await?;
    let mut config = server.client_config_via(&link);
    config.request_timeout = Duration::from_secs(60);
    let client = RtmClient::new("loadapp", "lossy-sub", config)?;
    let events = client.events();
    client.login(LoginOptions::default()).await?;
    let channels = args.channels.max(1);
    for c in 0..channels {
        client
            .subscribe(&format!("lossy{c}"), pubsub_only())
            .await?;
    }
    let sub = Sub::Rtm {
        _client: client,
        events,
    };
    let publisher = target.publisher(0).await?;
    link.set_delay(Duration::from_millis(args.delay_ms));
    link.set_loss(args.loss);

    let rate = args.rate as f64;
    let warm = (args.warmup * rate) as u64;
    let total = warm + (args.duration * rate) as u64;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(args.warmup + args.duration)
        + Duration::from_secs(10);
    let consumer = tokio::spawn(consume(sub, warm, total, deadline));
    let rt = Handle::current();
    let size = args.size;
    let publishing = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(100);
        let mut answers = Vec::new();
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            wait_until(due);
            let channel = format!("lossy{}", i % channels as u64);
            answers.extend(publisher.send(&rt, &channel, payload(i, instant_ns(due), size)));
        }
        // The publisher stays connected until its answers are in.
        (answers, publisher)
    });
    let seen = consumer.await?;
    let (answers, _publisher) = tokio::task::spawn_blocking(move || publishing.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))?;
    let mut errors = 0u64;
    for answer in answers {
        if !answer.await {
            errors += 1;
        }
    }
    report["channels"] = channels.into();
    report["rate"] = args.rate.into();
    report["loss"] = args.loss.into();
    report["delay_ms"] = args.delay_ms.into();
    report["lanes"] = args.lanes.map_or(serde_json::Value::Null, |l| l.into());
    report["expected"] = (total - warm).into();
    report["delivered"] = seen.measured.into();
    report["publish_errors"] = errors.into();
    report["link_dropped"] = link.dropped().into();
    quantiles(&seen.histogram, report);
    // The share of messages held up beyond the link's own delay plus 5 ms.
    let base_us = args.delay_ms * 1000;
    let late = seen.histogram.count_between(base_us + 5_000, u64::MAX);
    report["late_pct"] =
        ((late as f64 / seen.histogram.len().max(1) as f64 * 1000.0).round() / 10.0).into();
    eprintln!(
        "lossy channels={} lanes={:?} loss={} delay={}ms rate={}: delivered {}/{}  p50 {}µs p90 {}µs p99 {}µs max {}µs  late {}%",
        channels,
        args.lanes,
        args.loss,
        args.delay_ms,
        args.rate,
        seen.measured,
        total - warm,
        report["p50_us"],
        report["p90_us"],
        report["p99_us"],
        report["max_us"],
        report["late_pct"],
    );
    Ok(())
}
