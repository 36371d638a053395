//! A session rebuilt on another node (`docs/architecture.md`, "Cluster"): the node that held
//! the session is gone, and with it the events it had not yet delivered. After logging in again
//! and restoring the channels, the client fetches from each message channel's history what was
//! stored after the last message it delivered from there, delivers it oldest first, and then
//! reports the window as [`RtmEvent::MessagesLost`] with an unknown count, since messages that
//! were not stored cannot be known.

use std::time::Duration;

use rtm_proto::{
    ChannelType, GetMessagesRequest, HistoryMessage, LostMessages, MessageEvent, Request, Response,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::connection::Command;
use crate::crypto::Cipher;
use crate::event::{Listeners, RtmEvent};

/// How long recovering one channel may take before the rest is only reported.
const DEADLINE: Duration = Duration::from_secs(10);
/// Most messages recovered per channel.
const MOST: usize = 1_000;

/// Recovers the channels' gaps through `commands` (the new connection's, before it is handed to
/// the application) and tells them to `listeners`. `since` is when messages may have started to
/// be missed on a channel from which nothing was delivered yet; `now` is when the new session
/// began.
pub(crate) async fn recover(
    channels: &[String],
    commands: &mpsc::UnboundedSender<Command>,
    (listeners, cipher): (&Listeners, Option<&Cipher>),
    since: u64,
    now: u64,
) {
    for channel in channels {
        let from = listeners
            .last_message(channel)
            .map_or(since, |t| t.saturating_add(1));
        if from > now {
            continue;
        }
        let found = timeout(DEADLINE, fetch(commands, channel, from, now))
            .await
            .unwrap_or_default();
        for m in found.into_iter().rev() {
            let message = match cipher {
                Some(cipher) => cipher.open(m.message),
                None => m.message,
            };
            listeners.note_message(channel, m.timestamp);
            listeners.emit(RtmEvent::Message(MessageEvent {
                channel_type: ChannelType::Message,
                channel_name: channel.clone(),
                topic_name: String::new(),
                message,
                custom_type: m.custom_type,
                publisher: m.publisher,
                timestamp: m.timestamp,
            }));
        }
        listeners.emit(RtmEvent::MessagesLost(LostMessages {
            channel_type: ChannelType::Message,
            channel_name: channel.clone(),
            from,
            to: now,
            count: 0,
        }));
    }
}

/// The stored messages of `channel` from `from` to `to`, newest first.
async fn fetch(
    commands: &mpsc::UnboundedSender<Command>,
    channel: &str,
    from: u64,
    to: u64,
) -> Vec<HistoryMessage> {
    let mut found = Vec::new();
    let mut start = to.saturating_add(1);
    while found.len() < MOST {
        let (reply, answer) = oneshot::channel();
        let request = Request::GetMessages(GetMessagesRequest {
            channel_type: ChannelType::Message,
            channel: channel.to_owned(),
            message_count: 100,
            start,
            end: from,
        });
        if commands.send(Command { request, reply }).is_err() {
            break;
        }
        let Ok(Ok(Response::Messages {
            messages,
            new_start,
            ..
        })) = answer.await
        else {
            break;
        };
        found.extend(messages);
        if new_start == 0 {
            break;
        }
        start = new_start;
    }
    found
}
