//! The delivery lanes of a connection: events read, joined from their parts, handed to the
//! listeners and counted for acknowledgements and resume (`docs/protocol.md` §1.2, §5.6), and
//! messages missed during a resume recovered from the history (§5.12.1).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rtm_proto::limits::MAX_LANES;
use rtm_proto::{
    ChannelType, ErrorCode, Event, GetMessagesRequest, LostMessages, MessageEvent, Request,
    Response, RtmError, ServerMsg,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use crate::connection::{ACK_BYTES, ACK_EVERY, Command, Shared};
use crate::event::{Listeners, RtmEvent};
use crate::transport::{FrameReader, Read, oversized};

/// How long recovering one channel's missed messages may take before they are reported lost.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

/// Most events handed to the listeners at once: events that arrive together go over together
/// (one wake-up of the application's task instead of one each), and the first of a large burst
/// does not wait for all the others to be decoded.
const HAND_OFF: usize = 64;

/// Delivers, oldest first, the messages the server says this session missed, from the
/// channel's history (`docs/protocol.md` §5.12.1); reports the ones the history does not have
/// (not stored, or history off) with [`RtmEvent::MessagesLost`].
async fn recover(lost: LostMessages, listeners: &Listeners, shared: &Shared) {
    let mut recovered = Vec::new();
    let mut start = lost.to.saturating_add(1);
    let fetched = async {
        loop {
            let Some(requests) = shared.requests.get().and_then(|w| w.upgrade()) else {
                return;
            };
            let (reply, answer) = oneshot::channel();
            let request = Request::GetMessages(GetMessagesRequest {
                channel_type: lost.channel_type,
                channel: lost.channel_name.clone(),
                message_count: 100,
                start,
                end: lost.from,
            });
            if requests.send(Command { request, reply }).is_err() {
                return;
            }
            drop(requests);
            let Ok(Ok(Response::Messages {
                messages,
                new_start,
                ..
            })) = answer.await
            else {
                return;
            };
            recovered.extend(messages);
            if new_start == 0 {
                return;
            }
            start = new_start;
        }
    };
    let _ = timeout(RECOVERY_DEADLINE, fetched).await;
    // A user's history is the conversation: only what that user sent was missed.
    if lost.channel_type == ChannelType::User {
        recovered.retain(|m| m.publisher == lost.channel_name);
    }
    // What was delivered already (a window told with a margin, or a race) is not repeated:
    // stored messages have unique timestamps within their channel.
    if lost.channel_type == ChannelType::Message
        && let Some(last) = listeners.last_message(&lost.channel_name)
    {
        recovered.retain(|m| m.timestamp > last);
    }
    let found = recovered.len();
    for m in recovered.into_iter().rev() {
        let message = match &shared.cipher {
            Some(cipher) => cipher.open(m.message),
            None => m.message,
        };
        if lost.channel_type == ChannelType::Message {
            listeners.note_message(&lost.channel_name, m.timestamp);
        }
        listeners.emit(RtmEvent::Message(MessageEvent {
            channel_type: lost.channel_type,
            channel_name: lost.channel_name.clone(),
            topic_name: String::new(),
            message,
            custom_type: m.custom_type,
            publisher: m.publisher,
            timestamp: m.timestamp,
        }));
    }
    let missing = (lost.count as usize).saturating_sub(found);
    // A count of 0 is unknown (a server node lost its link to the others meanwhile): the
    // window is told whatever was found.
    if missing > 0 || lost.count == 0 {
        tracing::info!(
            channel = %lost.channel_name,
            missing,
            "messages missed while away could not be recovered from the history"
        );
        listeners.emit(RtmEvent::MessagesLost(LostMessages {
            count: missing as u32,
            ..lost
        }));
    }
}

/// Hands the events of one QUIC delivery stream to the listeners, counting them for its lane.
pub(crate) async fn read_stream(
    recv: web_transport_quinn::RecvStream,
    listeners: Listeners,
    shared: Arc<Shared>,
) {
    let mut reader = FrameReader::new(recv);
    // docs/protocol.md §1.2: the first frame says which lane the stream carries.
    let lane = match reader.next().await {
        Ok(Some(Read::Frame(body))) => match ServerMsg::decode(&body) {
            Ok(ServerMsg::Lane { lane }) if usize::from(lane) < MAX_LANES => usize::from(lane),
            other => {
                tracing::warn!("a delivery stream without a valid lane: {other:?}");
                return;
            }
        },
        _ => return,
    };
    let mut ready = Vec::new();
    while let Ok(Some(read)) = reader.next().await {
        handle(lane, read, &listeners, &shared, &mut ready).await;
        // What else has arrived goes over to the listeners in the same hand-off. Only a burst
        // (more than one event read at once) is worth asking the stream for more without
        // waiting: a lone event is the common case of a quiet lane, and the question costs a
        // poll of the stream.
        while ready.len() < HAND_OFF {
            match reader.buffered() {
                Some(read) => handle(lane, read, &listeners, &shared, &mut ready).await,
                None if ready.len() > 1 && reader.read_arrived().await => {}
                None => break,
            }
        }
        listeners.emit_all(&mut ready);
    }
}

/// Hands the events of one lane of a WebSocket to the listeners, once the gate is open.
pub(crate) async fn read_channel(
    lane: usize,
    mut frames: mpsc::UnboundedReceiver<Read>,
    mut open: watch::Receiver<bool>,
    listeners: Listeners,
    shared: Arc<Shared>,
) {
    // A dropped sender (the connection handle is gone) opens the gate too: the connection is
    // closing and what arrived must still be counted.
    while !*open.borrow_and_update() {
        if open.changed().await.is_err() {
            break;
        }
    }
    let mut ready = Vec::new();
    while let Some(read) = frames.recv().await {
        handle(lane, read, &listeners, &shared, &mut ready).await;
        while ready.len() < HAND_OFF
            && let Ok(read) = frames.try_recv()
        {
            handle(lane, read, &listeners, &shared, &mut ready).await;
        }
        listeners.emit_all(&mut ready);
    }
}

/// Handles one frame of `lane`: joins parts, adds its event to `ready` (events for the
/// listeners, handed over by the caller), and counts it.
async fn handle(
    lane: usize,
    read: Read,
    listeners: &Listeners,
    shared: &Shared,
    ready: &mut Vec<RtmEvent>,
) {
    let len = match &read {
        Read::Frame(body) => body.len(),
        Read::Oversized { len, .. } => *len,
    };
    match read {
        Read::Frame(body) => match ServerMsg::decode(&body) {
            Ok(ServerMsg::Event(Event::Part(part))) => shared.parts.add(lane, part.into()),
            Ok(ServerMsg::Event(event)) => match shared.parts.complete(lane, event) {
                Ok(event) => deliver(event, listeners, shared, ready).await,
                Err(error) => ready.push(RtmEvent::Error(error)),
            },
            Ok(other) => tracing::debug!("ignoring {other:?} on a delivery lane"),
            Err(e) => tracing::warn!("undecodable event from the server: {e}"),
        },
        // docs/protocol.md §2.2: said, skipped and counted, so that the lane goes on (and a
        // resume does not send it again).
        Read::Oversized { len, .. } => {
            tracing::warn!("{}", oversized(len));
            shared.parts.forget(std::iter::once(lane));
            ready.push(RtmEvent::Error(RtmError::new(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                "event",
                oversized(len),
            )));
        }
    }
    let received = shared.received[lane].fetch_add(1, Ordering::AcqRel) + 1;
    let len = len as u64;
    let bytes = shared.received_bytes.fetch_add(len, Ordering::AcqRel);
    if received.is_multiple_of(ACK_EVERY) || (bytes + len) / ACK_BYTES > bytes / ACK_BYTES {
        shared.ack.notify_one();
    }
}

/// Adds one whole event to `ready`, or (missed messages) hands what is ready to the listeners
/// and delivers the messages recovered before anything that follows.
async fn deliver(event: Event, listeners: &Listeners, shared: &Shared, ready: &mut Vec<RtmEvent>) {
    match event {
        Event::Message(mut m) => {
            if let Some(cipher) = &shared.cipher {
                m.message = cipher.open(m.message);
            }
            if m.channel_type == ChannelType::Message && m.topic_name.is_empty() {
                listeners.note_message(&m.channel_name, m.timestamp);
            }
            ready.push(RtmEvent::Message(m));
        }
        Event::Topic(t) => ready.push(RtmEvent::Topic(t)),
        Event::Presence(p) => ready.push(RtmEvent::Presence(p)),
        Event::Storage(s) => ready.push(RtmEvent::Storage(s)),
        // Read nothing more of this lane until the missed messages are delivered: they come
        // after what arrived before them and before what follows them.
        Event::MessagesLost(lost) => {
            listeners.emit_all(ready);
            recover(lost, listeners, shared).await;
        }
        Event::Lock(l) => ready.push(RtmEvent::Lock(l)),
        Event::ChannelLeft {
            channel_name,
            reason,
            ..
        } => ready.push(crate::link::stream_channel_failed(channel_name, reason)),
        Event::TokenPrivilegeWillExpire { channel_name } => {
            ready.push(RtmEvent::TokenPrivilegeWillExpire { channel_name });
        }
        Event::SessionClosed { reason } => {
            *shared
                .closed_by_server
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reason);
        }
        Event::Part(_) => tracing::debug!("a part is joined before delivery"),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtm_proto::{MessageEvent, Payload, encode_frame};

    use super::*;

    fn message(n: u64) -> MessageEvent {
        MessageEvent {
            channel_type: ChannelType::Message,
            channel_name: "c".into(),
            topic_name: String::new(),
            message: Payload::from(n.to_string().as_str()),
            custom_type: String::new(),
            publisher: "p".into(),
            timestamp: n,
        }
    }

    fn frame(n: u64) -> Read {
        let frame = encode_frame(&ServerMsg::Event(Event::Message(message(n))));
        // The body, without the 4-byte length.
        Read::Frame(Bytes::copy_from_slice(&frame[4..]))
    }

    /// Frames that are waiting together reach the listener as one hand-off (one wake-up), in
    /// order and counted; more than [`HAND_OFF`] are split.
    #[tokio::test]
    async fn frames_waiting_together_are_handed_over_at_once() {
        let (listeners, shared) = (Listeners::default(), Arc::new(Shared::default()));
        let mut events = listeners.add();
        let (tx, rx) = mpsc::unbounded_channel();
        let count = HAND_OFF as u64 + 3;
        for n in 0..count {
            tx.send(frame(n)).unwrap();
        }
        drop(tx);
        let (_open, gate) = watch::channel(true);
        read_channel(2, rx, gate, listeners.clone(), shared.clone()).await;

        assert_eq!(events.waiting_hand_offs(), 2);
        for n in 0..count {
            match events.try_recv() {
                Some(RtmEvent::Message(m)) => assert_eq!(m, message(n)),
                other => panic!("expected message {n}, got {other:?}"),
            }
        }
        assert_eq!(events.try_recv(), None);
        assert_eq!(shared.received[2].load(Ordering::Acquire), count);
    }
}
