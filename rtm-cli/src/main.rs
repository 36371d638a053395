//! `rtm`: try an rtm server from a terminal.
//!
//! ```text
//! rtm sub demo                 # print the messages of channel "demo" (and to this user)
//! rtm pub demo hello           # publish "hello" to channel "demo"
//! rtm pub --user bob hello     # send "hello" to user "bob"
//! rtm who demo                 # who is in channel "demo", with their states
//! rtm where bob                # the channels where "bob" is
//! rtm history demo --count 20  # the last 20 stored messages of "demo"
//! rtm meta set --channel demo topic=rust; rtm meta get --channel demo
//! rtm lock set demo door; rtm lock list demo
//! rtm bench                    # 100 round trips: is the server there, and how fast
//! ```
//!
//! By default it connects to the server that `cargo run -p rtm-server` starts on this machine,
//! trusting the certificate in `./rtm-data/cert.pem`.

mod bench;
mod query;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rtm_client::{
    ChannelType, Endpoint, GetHistoryMessageOptions, LoginOptions, PublishOptions, RtmClient,
    RtmConfig, RtmEvent, SubscribeOptions, Trust,
};

/// A command-line client for rtm, the real-time signaling server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server: host:port, a DNS name or an IP address.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    server: String,
    /// The name on the server's certificate [default: the --server name, or localhost for an
    /// IP address].
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// PEM file of the server's certificate (or of its CA) to trust.
    #[arg(long, global = true, default_value = "rtm-data/cert.pem")]
    cert: PathBuf,
    /// Trust the system's root certificates instead of --cert.
    #[arg(long, global = true)]
    platform_roots: bool,
    /// The App ID (any is accepted by a server without configured apps).
    #[arg(long, global = true, default_value = "rtmdemo")]
    app_id: String,
    /// The user id [default: cli-<process id>].
    #[arg(long, global = true)]
    user_id: Option<String>,
    /// The login token, for apps with an App Certificate.
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribe to channels and print their messages (and messages sent to this user) until
    /// Ctrl-C.
    Sub {
        /// Channels to subscribe to.
        #[arg(required = true)]
        channels: Vec<String>,
    },
    /// Publish one text message: `rtm pub CHANNEL TEXT`, or `rtm pub --user USER TEXT`.
    Pub {
        /// Send to this user instead of a channel.
        #[arg(long)]
        user: Option<String>,
        /// CHANNEL TEXT, or only TEXT with --user.
        #[arg(required = true, num_args = 1..=2, value_names = ["CHANNEL", "TEXT"])]
        words: Vec<String>,
        /// An application-defined message type.
        #[arg(long)]
        custom_type: Option<String>,
    },
    /// Who is in a channel, with their states.
    Who {
        channel: String,
        /// The stream channel of that name, not the message channel.
        #[arg(long)]
        stream: bool,
    },
    /// The channels where a user is.
    Where { user: String },
    /// A page of a channel's stored messages, oldest first (the app must keep history).
    History {
        /// The channel, or with --user the other user of a conversation.
        channel: String,
        /// CHANNEL is a user: the messages between that user and this one.
        #[arg(long)]
        user: bool,
        /// Messages at most (100 at most).
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Only messages older than this (a timestamp, as printed).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Only messages at or after this timestamp.
        #[arg(long, default_value_t = 0)]
        end: u64,
    },
    /// Read and write metadata.
    #[command(subcommand)]
    Meta(query::Meta),
    /// Look at and work with locks.
    #[command(subcommand)]
    Lock(query::LockCmd),
    /// A quick round-trip check: publish to a channel of its own and wait for each message.
    Bench {
        /// Round trips.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages per second at most: within the app's publish_rate (60 by default).
        #[arg(long, default_value_t = 50)]
        rate: u32,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let trust = if args.platform_roots {
        Trust::PlatformRoots
    } else {
        if !args.cert.exists() {
            bail!(
                "no certificate at {} (run from the folder where rtm-server runs, or pass --cert)",
                args.cert.display()
            );
        }
        Trust::PinnedCertFile(args.cert.clone())
    };
    let mut endpoint = Endpoint::lookup(&args.server, trust)
        .await
        .with_context(|| format!("finding the server {}", args.server))?;
    if let Some(name) = &args.server_name {
        endpoint.server_name.clone_from(name);
    }
    let config = RtmConfig::new(endpoint);
    let user_id = args
        .user_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", std::process::id()));
    let rtm = RtmClient::new(&args.app_id, &user_id, config)?;
    let mut events = rtm.events();
    rtm.login(LoginOptions {
        token: args.token.clone(),
    })
    .await
    .with_context(|| format!("logging in to {}", args.server))?;
    match args.command {
        Command::Pub {
            user,
            words,
            custom_type,
        } => {
            let (target, channel_type, text) = match (user, words.as_slice()) {
                (Some(user), [text]) => (user, ChannelType::User, text.clone()),
                (None, [channel, text]) => (channel.clone(), ChannelType::Message, text.clone()),
                (Some(_), _) => bail!("with --user, give only the text: rtm pub --user USER TEXT"),
                (None, _) => bail!("give a channel and a text: rtm pub CHANNEL TEXT"),
            };
            let options = PublishOptions {
                custom_type,
                channel_type,
                ..Default::default()
            };
            let sent = rtm.publish(&target, text, options).await?;
            eprintln!(
                "published to {} {target} at {}",
                channel_type, sent.timestamp
            );
            rtm.logout().await?;
        }
        Command::Sub { channels } => {
            for channel in &channels {
                rtm.subscribe(channel, SubscribeOptions::default()).await?;
            }
            eprintln!(
                "subscribed to {} as {user_id}; Ctrl-C to stop",
                channels.join(", ")
            );
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(RtmEvent::Message(m)) => {
                            let text = query::text(&m.message);
                            let kind = match m.channel_type {
                                ChannelType::User => "user",
                                _ => "channel",
                            };
                            let custom = if m.custom_type.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", m.custom_type)
                            };
                            println!("[{kind} {}] {}{custom}: {text}", m.channel_name, m.publisher);
                        }
                        Some(RtmEvent::LinkState(s)) => match s.current_state {
                            rtm_client::LinkState::Failed => {
                                bail!("the session ended: {}", s.reason);
                            }
                            rtm_client::LinkState::Disconnected
                            | rtm_client::LinkState::Suspended => {
                                eprintln!("connection lost ({}); reconnecting…", s.reason);
                            }
                            rtm_client::LinkState::Connected
                                if s.operation == rtm_client::LinkOperation::Reconnected =>
                            {
                                if s.is_resumed {
                                    eprintln!("reconnected; session resumed");
                                } else {
                                    eprintln!("reconnected with a new session; subscribed again");
                                }
                            }
                            _ => {}
                        },
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => {
                        // Logged out locally even if the server cannot be reached.
                        let _ = rtm.logout().await;
                        break;
                    }
                }
            }
        }
        other => {
            let done = match other {
                Command::Who { channel, stream } => query::who(&rtm, &channel, stream).await,
                Command::Where { user } => query::where_is(&rtm, &user).await,
                Command::History {
                    channel,
                    user,
                    count,
                    start,
                    end,
                } => {
                    let options = GetHistoryMessageOptions {
                        message_count: Some(count),
                        start,
                        end,
                    };
                    query::history(&rtm, &channel, user, options).await
                }
                Command::Meta(command) => query::meta(&rtm, command).await,
                Command::Lock(command) => query::lock(&rtm, command).await,
                Command::Bench { count, size, rate } => {
                    bench::run(&rtm, &mut events, count, size, rate).await
                }
                Command::Sub { .. } | Command::Pub { .. } => Ok(()),
            };
            // Logged out either way, so that the session does not linger for its timeout.
            let _ = rtm.logout().await;
            done?;
        }
    }
    Ok(())
}
