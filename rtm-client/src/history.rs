//! Message history: the reference's `rtm.history` (`docs/protocol.md` §5.12).
//!
//! Messages published with [`PublishOptions::store_in_history`](crate::PublishOptions) are kept
//! by the server (when the app keeps history) and read back a page at a time, newest first.

pub use rtm_proto::HistoryMessage;
use rtm_proto::{ChannelType, GetMessagesRequest, Request, Response};

use crate::{RtmClient, RtmError, unexpected};

/// The history calls of a client, from [`RtmClient::history`].
#[derive(Clone, Debug)]
pub struct History {
    client: RtmClient,
}

/// Options of [`History::get_messages`] (the reference's `GetHistoryMessageOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetHistoryMessageOptions {
    /// At most this many messages, 1–100 (`None`: 100; larger values are lowered to 100).
    pub message_count: Option<u32>,
    /// Only messages strictly older than this server timestamp (ms); 0 for the newest. Pass
    /// the previous answer's `new_start` to read the next page.
    pub start: u64,
    /// Only messages at this timestamp or newer (inclusive); 0 for no bound.
    pub end: u64,
}

/// The answer to [`History::get_messages`] (the reference's `GetMessagesResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMessagesResponse {
    /// The messages, newest first. Sealed payloads are opened with this client's key; one it
    /// cannot open stays [`Payload::Encrypted`](crate::Payload).
    pub message_list: Vec<HistoryMessage>,
    /// How many.
    pub count: usize,
    /// The `start` of the next (older) page; 0 when there is none.
    pub new_start: u64,
    /// Server time.
    pub timestamp: u64,
}

impl RtmClient {
    /// The history calls (the reference's `rtm.history`).
    pub fn history(&self) -> History {
        History {
            client: self.clone(),
        }
    }
}

impl History {
    /// A page of a channel's stored messages (or, with [`ChannelType::User`], of the messages
    /// between this user and the user named `channel_name`), newest first.
    pub async fn get_messages(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: GetHistoryMessageOptions,
    ) -> Result<GetMessagesResponse, RtmError> {
        let request = Request::GetMessages(GetMessagesRequest {
            channel_type,
            channel: channel_name.to_owned(),
            message_count: options.message_count.unwrap_or(0),
            start: options.start,
            end: options.end,
        });
        match self.client.request("getMessages", request).await? {
            Response::Messages {
                mut messages,
                new_start,
                timestamp,
            } => {
                if let Some(cipher) = &self.client.inner.cipher {
                    for m in &mut messages {
                        m.message = cipher.open(m.message.clone());
                    }
                }
                Ok(GetMessagesResponse {
                    count: messages.len(),
                    message_list: messages,
                    new_start,
                    timestamp,
                })
            }
            other => Err(unexpected("getMessages", &other)),
        }
    }
}
