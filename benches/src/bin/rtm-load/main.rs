//! `rtm-load`: an open-loop load generator for rtm, NATS and Redis pub/sub.
//!
//! The publisher runs on its own OS thread and sends message `i` at `start + i / rate`,
//! whatever happened to earlier messages; each message carries its *scheduled* send time, and
//! every subscriber records `receive time - scheduled time` into an HDR histogram. A server that
//! stalls therefore shows its stall in the latency, instead of slowing the publisher down and
//! hiding it (coordinated omission). All clocks are one process's monotonic clock.
//!
//! The same code drives the three systems; only connecting, subscribing and publishing differ.
//! The report is one JSON line per run (and a readable line on stderr).
//!
//! ```text
//! rtm-load --system rtm --workload fanout --subs 100 --rate 1000 --size 100
//! rtm-load --system nats --addr 127.0.0.1:4222 --server-pid 1234 --workload throughput
//! ```

mod measure;
mod runs;
mod target;
mod workloads;

use measure::*;
use runs::*;
use target::*;
use workloads::*;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rtm_client::{
    Endpoint, EventStream, JoinOptions, JoinTopicOptions, LoginOptions, Payload, PublishOptions,
    QuicSocket, RtmClient, RtmConfig, RtmEvent, StreamChannel, SubscribeOptions,
    TopicMessageOptions, TopicSubscribeOptions, Trust,
};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    Rtm,
    Nats,
    Redis,
}

/// How rtm clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Way {
    /// Native QUIC.
    Quic,
    /// WebSocket (TCP): the server's `[websocket]` listener (`--ws-addr` with `--addr`).
    Websocket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// N subscribers on one channel, one publisher at a fixed rate.
    Fanout,
    /// One publisher as fast as flow control allows, one subscriber.
    Throughput,
    /// K publisher/subscriber pairs, each on its own channel; --rate is the total.
    Channels,
    /// C idle connections, each subscribed to its own channel; server memory per connection.
    Conns,
    /// rtm only: like fanout, in a stream channel: one publisher joined to topic "load", N
    /// subscribers of that topic who chose that publisher.
    Topic,
    /// rtm only: --conns users present in one channel (without presence events themselves),
    /// then --joins users join it one after another with presence: the time to the answer and
    /// to the snapshot of everyone, and the presence events 10 observers get meanwhile.
    Presence,
    /// rtm only, in-process: one subscriber on --channels channels behind the test kit's lossy
    /// link (--loss, --delay-ms each way), one publisher sending to them in turn at --rate.
    /// Shows whether a lost packet of one channel holds up the others.
    Lossy,
    /// rtm only: --conns connections that say hello and never log in; with --flood-kib N each
    /// also tries to open 3 more streams and send N KiB on each, and sends N KiB of a frame it
    /// never finishes on its control stream. Server memory before and after (measured within
    /// the server's login timeout, with the connections open).
    Prelogin,
}

/// Open-loop load generator for rtm, NATS and Redis pub/sub.
#[derive(Debug, Parser)]
struct Args {
    /// The system under test.
    #[arg(long, value_enum, default_value = "rtm")]
    system: System,
    /// The workload.
    #[arg(long, value_enum, default_value = "fanout")]
    workload: Workload,
    /// The server's address. For rtm without it, a server is started in this process.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// rtm cluster: the nodes the subscribers connect to, in turn (repeat the flag); with
    /// --pub-addr. Every node must present the certificate given with --cert.
    #[arg(long)]
    sub_addr: Vec<SocketAddr>,
    /// rtm cluster: the node the publishers connect to.
    #[arg(long)]
    pub_addr: Option<SocketAddr>,
    /// rtm, and NATS or Redis with --tls: the server's certificate (PEM) to trust.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// NATS and Redis: connect over TLS (with --cert), as rtm always does.
    #[arg(long)]
    tls: bool,
    /// The server's process id, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Subscribers (fanout).
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Messages per second (fanout: from the one publisher; channels: in total).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Message size in bytes (at least 16).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Publisher/subscriber pairs (channels).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Idle connections (conns).
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// rtm: clients sharing one UDP socket.
    #[arg(long, default_value_t = 100)]
    clients_per_socket: usize,
    /// Channels (lossy).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Fraction of datagrams the link drops, each way (lossy).
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// One-way delay of the link in milliseconds (lossy).
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// Users that join one after another (presence).
    #[arg(long, default_value_t = 100)]
    joins: usize,
    /// rtm in-process: delivery streams per connection (lanes), 1 to 16.
    #[arg(long)]
    lanes: Option<u8>,
    /// rtm: how clients reach the server.
    #[arg(long, value_enum, default_value = "quic")]
    transport: Way,
    /// rtm over WebSocket: the server's WebSocket address (with --addr; an in-process server
    /// has one of its own).
    #[arg(long)]
    ws_addr: Option<SocketAddr>,
    /// Fanout: this many more clients subscribe to another channel ("storm") before the run,
    /// and all of them disconnect at once halfway through the measured window: a mass leave
    /// beside steady publishing.
    #[arg(long, default_value_t = 0)]
    storm: usize,
    /// Seconds over which idle CPU is measured (conns); longer than the heartbeat interval
    /// to see the keep-alives' steady state.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// rtm: the clients' heartbeat interval in seconds (5 to 1 800; the reference's default 5).
    /// Over QUIC it is the keep-alive interval, and the idle timeout is 10 s more.
    #[arg(long, default_value_t = 5)]
    heartbeat: u32,
    /// KiB each hostile connection tries to send per stream (prelogin).
    #[arg(long, default_value_t = 0)]
    flood_kib: usize,
    /// A label for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.size < 16 {
        bail!("--size must be at least 16 (sequence number and timestamp)");
    }
    let _ = clock(); // fixes the clock's base before anything is measured
    let mut target = Target::new(&args).await?;
    let server_pid = match (args.server_pid, args.addr) {
        (Some(pid), _) => Some(pid),
        // In-process: the server is this process.
        (None, None) => Some(std::process::id()),
        (None, Some(_)) => None,
    };
    let mut report = serde_json::json!({
        "system": format!("{:?}", args.system).to_lowercase(),
        "workload": format!("{:?}", args.workload).to_lowercase(),
        "label": args.label,
        "server": if args.addr.is_some() { "separate process" } else { "in-process" },
        "size": args.size,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        // rtm over QUIC always encrypts; over WebSocket the load generator speaks plain ws://.
        "tls": (args.system == System::Rtm && args.transport == Way::Quic) || args.tls,
        "heartbeat_s": args.heartbeat,
    });
    match args.workload {
        Workload::Fanout | Workload::Channels | Workload::Topic => {
            rate_run(&args, &mut target, server_pid, &mut report).await?
        }
        Workload::Throughput => throughput_run(&args, &mut target, server_pid, &mut report).await?,
        Workload::Conns => conns_run(&args, &mut target, server_pid, &mut report).await?,
        Workload::Lossy => lossy_run(&args, &mut target, &mut report).await?,
        Workload::Presence => presence_run(&args, &mut target, server_pid, &mut report).await?,
        Workload::Prelogin => prelogin_run(&args, &mut target, server_pid, &mut report).await?,
    }
    println!("{report}");
    Ok(())
}

fn quantiles(h: &Histogram<u64>, report: &mut serde_json::Value) {
    for (name, q) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("p999_us", 0.999),
    ] {
        report[name] = h.value_at_quantile(q).into();
    }
    report["max_us"] = h.max().into();
    // The distribution for plots: every percentile, then the tail.
    let tail = [
        0.9925, 0.995, 0.9975, 0.999, 0.99925, 0.9995, 0.99975, 0.9999, 0.99995, 1.0,
    ];
    let cdf: Vec<[f64; 2]> = (1..100)
        .map(|p| f64::from(p) / 100.0)
        .chain(tail)
        .map(|q| [q, h.value_at_quantile(q) as f64])
        .collect();
    report["cdf"] = serde_json::json!(cdf);
}
