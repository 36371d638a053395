//! The session's history call (`docs/protocol.md` §5.12).

use rtm_proto::history::MAX_HISTORY_PAGE;
use rtm_proto::{
    ChannelType, ErrorCode, GetMessagesRequest, Response, WireError, limits, validate,
};

use super::{Session, logged_in, storage};
use crate::core::{err, invalid, now_ms, retention};
use crate::engine::{Engine, HistoryKey};

impl<E: Engine> Session<E> {
    pub(super) async fn get_messages(
        &mut self,
        query: GetMessagesRequest,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        let key = match query.channel_type {
            ChannelType::Message => {
                validate::channel_name(&query.channel).map_err(invalid)?;
                HistoryKey::channel(&query.channel)
            }
            ChannelType::User => {
                validate::user_id(&query.channel, true).map_err(invalid)?;
                HistoryKey::conversation(state.handle.user_id(), &query.channel)
            }
            ChannelType::Stream => {
                return Err(err(
                    ErrorCode::InvalidChannelType,
                    "history is kept for message and user channels",
                ));
            }
        };
        if query.start != 0 && query.end > query.start {
            return Err(err(
                ErrorCode::HistoryInvalidTimestamp,
                format!("end {} is after start {}", query.end, query.start),
            ));
        }
        let retention = retention(&state.policy)?;
        storage::check_storage_rate(state, &self.core)?;
        let count = match query.message_count {
            0 => MAX_HISTORY_PAGE,
            n => n.min(MAX_HISTORY_PAGE),
        };
        let page = self
            .core
            .get_messages(
                state.handle.app_id(),
                key,
                (count, query.start, query.end),
                retention,
            )
            .await?;
        let mut messages = page.messages;
        let mut new_start = page.new_start;
        // docs/protocol.md §2.2: a page of large messages is cut short by bytes; the next page
        // starts below the last one given.
        let fit = rtm_proto::split::fitting(&messages, limits::LIST_BUDGET);
        if fit < messages.len() {
            messages.truncate(fit);
            new_start = messages.last().map_or(0, |m| m.timestamp);
        }
        Ok(Response::Messages {
            messages,
            new_start,
            timestamp: now_ms(),
        })
    }
}
