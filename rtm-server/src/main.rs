//! The `rtm-server` binary: reads the configuration, starts the server, stops on Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rtm_server::{Server, ServerConfig, token};

/// rtm: a self-hosted real-time signaling server over QUIC, WebTransport and WebSocket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file. Without one, the embedded defaults apply: QUIC and
    /// WebTransport on 127.0.0.1:4433 (UDP), WebSocket on 127.0.0.1:4434 (TCP), data in
    /// ./rtm-data, any App ID accepted without a token.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Listen for WebSocket clients on this TCP address instead of the configured one.
    #[arg(long)]
    websocket_listen: Option<SocketAddr>,
    /// Serve health checks and metrics on this TCP address instead of the configured one
    /// (default 127.0.0.1:4435).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Keep data in this directory instead of the configured one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Set any configuration key, as `section.key=value` (`--set http.admin_key=...`,
    /// `--set limits.publish_rate=100`); repeatable. Wins over the file and over `RTM_...`
    /// environment variables (`RTM_HTTP__ADMIN_KEY`), which win over the file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The `--log-format` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the full default configuration, with comments: a starting point for a
    /// configuration file.
    Config,
    /// Print a Signaling token (AccessToken2, "007"): an RTM login token, or with --channel an
    /// RTC token for joining that stream channel.
    Token {
        /// The App ID (32 hexadecimal characters).
        #[arg(long)]
        app_id: String,
        /// The App Certificate (32 hexadecimal characters).
        #[arg(long)]
        app_certificate: String,
        /// The user id the token is for.
        #[arg(long)]
        user_id: String,
        /// Seconds the token is valid (the reference allows at most 24 hours).
        #[arg(long, default_value_t = 3600)]
        expire: u32,
        /// Make an RTC token for this stream channel instead of an RTM login token.
        #[arg(long)]
        channel: Option<String>,
    },
}

/// Prints a token for the `token` subcommand.
fn print_token(command: Command) -> anyhow::Result<()> {
    let Command::Token {
        app_id,
        app_certificate,
        user_id,
        expire,
        channel,
    } = command
    else {
        anyhow::bail!("not a token command");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let issue_ts = u32::try_from(now).context("the clock is past 2106")?;
    let mut salt = [0u8; 4];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("no random numbers available"))?;
    // The reference builders use a salt in 1..=99_999_999.
    let salt = u32::from_le_bytes(salt) % 99_999_999 + 1;
    let token = match channel {
        None => {
            token::build_rtm_token(&app_id, &app_certificate, &user_id, issue_ts, expire, salt)?
        }
        Some(channel) => token::build_rtc_token(
            &app_id,
            &app_certificate,
            &channel,
            &user_id,
            issue_ts,
            expire,
            salt,
        )?,
    };
    println!("{token}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match args.command {
        Some(Command::Config) => {
            print!("{}", rtm_server::config::DEFAULT_TOML);
            return Ok(());
        }
        Some(command) => return print_token(command),
        None => {}
    }
    // Variables that are not UTF-8 are no settings (and would make `std::env::vars` panic).
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut config = ServerConfig::load(args.config.as_deref(), env, &args.set)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen) = args.websocket_listen {
        config.websocket.listen = Some(listen);
    }
    if let Some(listen) = args.http_listen {
        config.http.enabled = true;
        config.http.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let handle = Server::builder()
        .config(config)
        .start()
        .await
        .context("starting the server")?;
    let cert = handle.cert();
    tracing::info!(
        "rtm-server listening on {} (QUIC, ALPN rtm/1); certificate {}{}; data in {}; {}",
        handle.local_addr(),
        cert.cert_path.display(),
        if cert.generated { " (self-signed)" } else { "" },
        handle.data_dir().display(),
        if handle.accepts_any_app() {
            "no apps configured: any App ID is accepted without a token"
        } else {
            "serving the configured apps"
        },
    );
    if let Some(url) = handle.webtransport_url() {
        match (handle.webtransport_cert_hash(), handle.websocket_addr()) {
            (Some(hash), Some(ws)) => tracing::info!(
                "WebTransport {url}; certificate sha-256 {hash} (valid 10 days, renewed; served \
                 at {}://{}/rtm/certificate-hash)",
                if ws.tls { "https" } else { "http" },
                ws.addr
            ),
            (Some(hash), None) => tracing::info!("WebTransport {url}; certificate sha-256 {hash}"),
            (None, _) => tracing::info!("WebTransport {url}"),
        }
    }
    if let Some(ws) = handle.websocket_addr() {
        tracing::info!("WebSocket {ws} (subprotocol rtm.v1)");
    }
    if let Some(http) = handle.http_addr() {
        tracing::info!("operators: http://{http}/metrics, /healthz, /readyz");
    }
    stop_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C, or SIGTERM (what service managers send): either stops the server
/// gracefully, telling the clients (they reconnect to its successor).
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
