//! The operator's commands: who is in a channel, where a user is, a channel's history,
//! metadata and locks. Each prints what it found, one line per item.

use anyhow::bail;
use clap::{Args, Subcommand};
use rtm_client::{
    AcquireLockOptions, ChannelType, GetHistoryMessageOptions, GetUserMetadataOptions,
    MetadataItem, MetadataOptions, Payload, RemoveChannelMetadataOptions,
    RemoveUserMetadataOptions, RtmClient, SetLockOptions, SetOrUpdateUserMetadataOptions,
    StoredItem, WhoNowOptions,
};

/// Which metadata set: a channel's or a user's.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// A channel's metadata.
    #[arg(long, conflicts_with = "user")]
    channel: Option<String>,
    /// With --channel: the stream channel of that name, not the message channel.
    #[arg(long, requires = "channel")]
    stream: bool,
    /// A user's metadata.
    #[arg(long)]
    user: Option<String>,
}

/// `rtm meta ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum Meta {
    /// Print a metadata set: `rtm meta get --channel room`, `rtm meta get --user bob`.
    Get {
        #[command(flatten)]
        target: Target,
    },
    /// Set items: `rtm meta set --channel room topic=rust mood=calm`.
    Set {
        #[command(flatten)]
        target: Target,
        /// KEY=VALUE items.
        #[arg(required = true, value_name = "KEY=VALUE")]
        items: Vec<String>,
    },
    /// Remove items, or the whole set without keys: `rtm meta remove --channel room topic`.
    Remove {
        #[command(flatten)]
        target: Target,
        /// Keys to remove; none: the whole set.
        keys: Vec<String>,
    },
}

/// `rtm lock ...`: the locks of a message channel (`--stream` for a stream channel's).
#[derive(Debug, Subcommand)]
pub(crate) enum LockCmd {
    /// The locks of a channel, with their owners.
    List {
        channel: String,
        #[arg(long)]
        stream: bool,
    },
    /// Create a lock, free, held at most TTL seconds after its owner's connection is lost.
    Set {
        channel: String,
        name: String,
        #[arg(long, default_value_t = 10)]
        ttl: u32,
        #[arg(long)]
        stream: bool,
    },
    /// Take a lock (with --wait, wait until it is free). It is released when this command
    /// ends, after its ttl.
    Acquire {
        channel: String,
        name: String,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        stream: bool,
    },
    /// Give up a lock this user holds.
    Release {
        channel: String,
        name: String,
        #[arg(long)]
        stream: bool,
    },
    /// Take a lock away from its owner.
    Revoke {
        channel: String,
        name: String,
        owner: String,
        #[arg(long)]
        stream: bool,
    },
    /// Delete a lock.
    Remove {
        channel: String,
        name: String,
        #[arg(long)]
        stream: bool,
    },
}

fn kind(stream: bool) -> ChannelType {
    if stream {
        ChannelType::Stream
    } else {
        ChannelType::Message
    }
}

/// Prints a payload as text (bytes as their count).
pub(crate) fn text(payload: &Payload) -> String {
    match payload {
        Payload::Text(t) => t.clone(),
        Payload::Binary(b) => format!("<{} bytes>", b.len()),
        Payload::Encrypted(b) => format!("<{} encrypted bytes: no key to read them>", b.len()),
    }
}

/// `rtm who CHANNEL`: every visible user, page after page, with their states.
pub(crate) async fn who(rtm: &RtmClient, channel: &str, stream: bool) -> anyhow::Result<()> {
    let mut page = None;
    let mut total = 0;
    loop {
        let options = WhoNowOptions {
            include_user_id: true,
            include_state: true,
            page,
        };
        let answer = rtm
            .presence()
            .who_now(channel, kind(stream), options)
            .await?;
        total = total.max(answer.total_occupancy);
        for user in &answer.occupants {
            let states: Vec<String> = user
                .states
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if states.is_empty() {
                println!("{}", user.user_id);
            } else {
                println!("{} {}", user.user_id, states.join(" "));
            }
        }
        if answer.next_page.is_empty() {
            break;
        }
        page = Some(answer.next_page);
    }
    eprintln!("{total} users in {channel}");
    Ok(())
}

/// `rtm where USER`: the channels where a user is.
pub(crate) async fn where_is(rtm: &RtmClient, user: &str) -> anyhow::Result<()> {
    let answer = rtm.presence().where_now(user).await?;
    for channel in &answer.channels {
        println!("{} {}", channel.channel_type, channel.channel_name);
    }
    eprintln!("{user} is in {} channels", answer.total_channel);
    Ok(())
}

/// `rtm history CHANNEL`: a page of a channel's (or, with `user`, a conversation's) history,
/// oldest first.
pub(crate) async fn history(
    rtm: &RtmClient,
    channel: &str,
    user: bool,
    options: GetHistoryMessageOptions,
) -> anyhow::Result<()> {
    let channel_type = if user {
        ChannelType::User
    } else {
        ChannelType::Message
    };
    let answer = rtm
        .history()
        .get_messages(channel, channel_type, options)
        .await?;
    for m in answer.message_list.iter().rev() {
        let custom = if m.custom_type.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.custom_type)
        };
        println!(
            "{} {}{custom}: {}",
            m.timestamp,
            m.publisher,
            text(&m.message)
        );
    }
    if answer.new_start != 0 {
        eprintln!("older messages: --start {}", answer.new_start);
    }
    Ok(())
}

fn print_items(items: &[StoredItem]) {
    for item in items {
        let author = if item.author_user_id.is_empty() {
            String::new()
        } else {
            format!(" by {}", item.author_user_id)
        };
        println!(
            "{}={} (revision {}{author})",
            item.key, item.value, item.revision
        );
    }
}

fn items(pairs: &[String]) -> anyhow::Result<Vec<MetadataItem>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok(MetadataItem::new(k, v)),
            None => bail!("{pair}: write KEY=VALUE"),
        })
        .collect()
}

fn with_author() -> MetadataOptions {
    MetadataOptions {
        add_timestamp: true,
        add_user_id: true,
        ..MetadataOptions::default()
    }
}

/// `rtm meta ...`.
pub(crate) async fn meta(rtm: &RtmClient, command: Meta) -> anyhow::Result<()> {
    let storage = rtm.storage();
    let (target, op) = match command {
        Meta::Get { target } => (target, None),
        Meta::Set { target, items } => (target, Some((true, items))),
        Meta::Remove { target, keys } => (target, Some((false, keys))),
    };
    match (&target.channel, &target.user, op) {
        (Some(channel), None, None) => {
            let got = storage
                .get_channel_metadata(channel, kind(target.stream))
                .await?;
            print_items(&got.metadata);
            eprintln!("major revision {}", got.major_revision);
        }
        (None, Some(user), None) => {
            let options = GetUserMetadataOptions {
                user_id: Some(user.clone()),
            };
            let got = storage.get_user_metadata(options).await?;
            print_items(&got.metadata);
            eprintln!("major revision {}", got.major_revision);
        }
        (Some(channel), None, Some((true, pairs))) => {
            let done = storage
                .set_channel_metadata(channel, kind(target.stream), items(&pairs)?, with_author())
                .await?;
            eprintln!("set; major revision {}", done.major_revision);
        }
        (None, Some(user), Some((true, pairs))) => {
            let options = SetOrUpdateUserMetadataOptions {
                user_id: Some(user.clone()),
                options: with_author(),
            };
            let done = storage.set_user_metadata(items(&pairs)?, options).await?;
            eprintln!("set; major revision {}", done.major_revision);
        }
        (Some(channel), None, Some((false, keys))) => {
            let options = RemoveChannelMetadataOptions {
                data: keys.iter().map(|k| MetadataItem::new(k, "")).collect(),
                options: MetadataOptions::default(),
            };
            let done = storage
                .remove_channel_metadata(channel, kind(target.stream), options)
                .await?;
            eprintln!("removed; major revision {}", done.major_revision);
        }
        (None, Some(user), Some((false, keys))) => {
            let options = RemoveUserMetadataOptions {
                user_id: Some(user.clone()),
                data: keys.iter().map(|k| MetadataItem::new(k, "")).collect(),
                options: MetadataOptions::default(),
            };
            let done = storage.remove_user_metadata(options).await?;
            eprintln!("removed; major revision {}", done.major_revision);
        }
        _ => bail!("name the set: --channel CHANNEL or --user USER"),
    }
    Ok(())
}

/// `rtm lock ...`.
pub(crate) async fn lock(rtm: &RtmClient, command: LockCmd) -> anyhow::Result<()> {
    let locks = rtm.lock();
    match command {
        LockCmd::List { channel, stream } => {
            let got = locks.get_locks(&channel, kind(stream)).await?;
            for lock in &got.lock_details {
                let owner = if lock.owner.is_empty() {
                    "free"
                } else {
                    lock.owner.as_str()
                };
                println!("{} {owner} (ttl {} s)", lock.lock_name, lock.ttl);
            }
            eprintln!("{} locks in {channel}", got.total_locks);
        }
        LockCmd::Set {
            channel,
            name,
            ttl,
            stream,
        } => {
            let options = SetLockOptions { ttl: Some(ttl) };
            locks
                .set_lock(&channel, kind(stream), &name, options)
                .await?;
            eprintln!("lock {name} set in {channel} (ttl {ttl} s)");
        }
        LockCmd::Acquire {
            channel,
            name,
            wait,
            stream,
        } => {
            let options = AcquireLockOptions { retry: wait };
            locks
                .acquire_lock(&channel, kind(stream), &name, options)
                .await?;
            eprintln!("lock {name} acquired in {channel}");
        }
        LockCmd::Release {
            channel,
            name,
            stream,
        } => {
            locks.release_lock(&channel, kind(stream), &name).await?;
            eprintln!("lock {name} released in {channel}");
        }
        LockCmd::Revoke {
            channel,
            name,
            owner,
            stream,
        } => {
            locks
                .revoke_lock(&channel, kind(stream), &name, &owner)
                .await?;
            eprintln!("lock {name} taken from {owner} in {channel}");
        }
        LockCmd::Remove {
            channel,
            name,
            stream,
        } => {
            locks.remove_lock(&channel, kind(stream), &name).await?;
            eprintln!("lock {name} removed from {channel}");
        }
    }
    Ok(())
}
