//! The `rtm-server` binary: reads the configuration, starts the server, stops on Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rtm_server::{Server, ServerConfig};

/// rtm: a self-hosted real-time signaling server over QUIC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file. Without one, the embedded defaults apply: listen on
    /// 127.0.0.1:4433, keep data in ./rtm-data, accept any App ID without a token.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep data in this directory instead of the configured one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
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
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
