//! Writing requests, and publishes that queue up together sent as one `PublishBatch`.
//!
//! The connection's driver takes whatever calls are queued when it wakes (`connection.rs`).
//! Among them, consecutive publishes to the same channel with the same options go out as one
//! [`PublishBatch`] (`docs/protocol.md` §5.2.1): the server serves each message as a publish of
//! its own, in order, and answers once with a result per message, which completes each call as
//! its own answer would have. A call that finds the queue empty goes out alone, as before, so
//! batching only happens when calls are made faster than the connection writes them.

use std::collections::HashMap;

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::limits::MAX_PUBLISH_BATCH;
use rtm_proto::{
    ClientMsg, ErrorCode, PUBLISH_BATCH_VERSION, PublishBatch, PublishRequest, Request, RequestId,
    Response, WireError,
};

use crate::connection::{Command, Reply};

/// Room kept in a batch's frame for everything but the payloads, the channel name and the
/// custom type: the frame header, ids, tags and lengths.
const BATCH_HEAD_ROOM: usize = 64;
/// What each message adds to a batch besides its payload, at most: the payload's tag and length.
const PER_MESSAGE: usize = 8;

/// The call (or calls) a request's answer completes.
pub(crate) enum Waiting {
    /// One call.
    One(Reply),
    /// The calls whose messages went in one batch, in order, and the channel they went to.
    Batch {
        channel: String,
        replies: Vec<Reply>,
    },
}

impl Waiting {
    /// Completes the calls with the server's answer.
    pub(crate) fn complete(self, result: Result<Response, WireError>) {
        match self {
            Self::One(reply) => {
                let _ = reply.send(result);
            }
            Self::Batch { channel, replies } => match result {
                Ok(Response::PublishBatch { results, .. }) => {
                    let mut results = results.into_iter();
                    for reply in replies {
                        let answer = match results.next() {
                            Some(Ok(timestamp)) => Ok(Response::Publish {
                                channel: channel.clone(),
                                timestamp,
                            }),
                            Some(Err(e)) => Err(e),
                            None => Err(WireError::new(
                                ErrorCode::InvalidParameter,
                                "the server's answer to a publish batch left this message out",
                            )),
                        };
                        let _ = reply.send(answer);
                    }
                }
                other => {
                    for reply in replies {
                        let _ = reply.send(other.clone());
                    }
                }
            },
        }
    }
}

/// Where requests are written: the table of calls waiting for answers, the next request id,
/// and the bytes to send.
pub(crate) struct Writer<'a> {
    pub(crate) table: &'a mut HashMap<u32, Waiting>,
    pub(crate) next_id: &'a mut u32,
    pub(crate) out: &'a mut BytesMut,
}

impl Writer<'_> {
    /// Encodes `request` under a fresh id and records who waits for its answer.
    pub(crate) fn send(&mut self, request: Request, waiting: Waiting) {
        let id = *self.next_id;
        *self.next_id = id.wrapping_add(1).max(1);
        self.table.insert(id, waiting);
        encode_frame_into(
            &ClientMsg::Request {
                id: RequestId(id),
                request,
            },
            self.out,
        );
    }
}

/// Consecutive publishes held back to go out together.
pub(crate) struct Batcher {
    /// Each publish, whether it is stored in the history, and its call.
    run: Vec<(PublishRequest, bool, Reply)>,
    /// Bytes of `run` in a batch: its names once, and each payload with [`PER_MESSAGE`].
    bytes: usize,
    /// Most payload bytes a batch may carry: the server's frame limit less [`BATCH_HEAD_ROOM`];
    /// 0 (no batches) when the limit is not known or the server does not know batches.
    budget: usize,
}

impl Batcher {
    /// Batches that fit in frames of `max_frame_len` bytes (0: unknown, no batches), on a
    /// connection that speaks protocol `version` (no batches before
    /// [`PUBLISH_BATCH_VERSION`]).
    pub(crate) fn new(version: u16, max_frame_len: usize) -> Self {
        let budget = if version >= PUBLISH_BATCH_VERSION {
            max_frame_len.saturating_sub(BATCH_HEAD_ROOM)
        } else {
            0
        };
        Self {
            run: Vec::new(),
            bytes: 0,
            budget,
        }
    }

    /// Writes `command`, or holds it back to join the publishes that follow it.
    pub(crate) fn push(&mut self, command: Command, w: &mut Writer<'_>) {
        let Command { request, reply } = command;
        let (publish, store) = match request {
            Request::Publish(publish) => (publish, false),
            Request::PublishAndStore(publish) => (publish, true),
            other => {
                self.flush(w);
                w.send(other, Waiting::One(reply));
                return;
            }
        };
        let cost = publish.message.len() + PER_MESSAGE;
        // The names count once per batch (the first publish pays for them).
        let names = publish.channel.len() + publish.custom_type.len();
        let joins = self.run.first().is_some_and(|(first, first_store, _)| {
            *first_store == store
                && first.channel_type == publish.channel_type
                && first.channel == publish.channel
                && first.custom_type == publish.custom_type
                && self.run.len() < MAX_PUBLISH_BATCH
                && self.bytes + cost <= self.budget
        });
        if !joins {
            self.flush(w);
            self.bytes = names;
        }
        self.bytes += cost;
        self.run.push((publish, store, reply));
    }

    /// Writes the publishes held back: alone as they were made, or as one batch.
    pub(crate) fn flush(&mut self, w: &mut Writer<'_>) {
        self.bytes = 0;
        if self.run.len() <= 1 {
            if let Some((publish, store, reply)) = self.run.pop() {
                let request = if store {
                    Request::PublishAndStore(publish)
                } else {
                    Request::Publish(publish)
                };
                w.send(request, Waiting::One(reply));
            }
            return;
        }
        let mut run = std::mem::take(&mut self.run).into_iter();
        let Some((first, store, first_reply)) = run.next() else {
            return;
        };
        let PublishRequest {
            channel_type,
            channel,
            message,
            custom_type,
        } = first;
        let mut messages = vec![message];
        let mut replies = vec![first_reply];
        for (publish, _, reply) in run {
            messages.push(publish.message);
            replies.push(reply);
        }
        let batch = PublishBatch {
            channel_type,
            channel: channel.clone(),
            custom_type,
            store,
            messages,
        };
        w.send(
            Request::PublishBatch(batch),
            Waiting::Batch { channel, replies },
        );
    }
}

#[cfg(test)]
mod tests {
    use rtm_proto::{ChannelType, Payload};
    use tokio::sync::oneshot;

    use super::*;

    fn publish(
        channel: &str,
        text: &str,
        store: bool,
    ) -> (Command, oneshot::Receiver<Result<Response, WireError>>) {
        let (reply, answer) = oneshot::channel();
        let publish = PublishRequest {
            channel_type: ChannelType::Message,
            channel: channel.into(),
            message: Payload::from(text),
            custom_type: String::new(),
        };
        let request = if store {
            Request::PublishAndStore(publish)
        } else {
            Request::Publish(publish)
        };
        (Command { request, reply }, answer)
    }

    /// The requests written, decoded, with their ids.
    fn written(out: &mut BytesMut) -> Vec<(u32, Request)> {
        let mut decoder = rtm_proto::FrameDecoder::new(1 << 20);
        let mut requests = Vec::new();
        while let Some(body) = decoder.decode(out).unwrap() {
            match ClientMsg::decode(&body).unwrap() {
                ClientMsg::Request { id, request } => requests.push((id.0, request)),
                other => panic!("unexpected {other:?}"),
            }
        }
        requests
    }

    /// Pushes `commands` in one turn of the driver; what went out.
    fn write(
        batcher: &mut Batcher,
        table: &mut HashMap<u32, Waiting>,
        commands: Vec<Command>,
    ) -> Vec<(u32, Request)> {
        let (mut next_id, mut out) = (1, BytesMut::new());
        let mut w = Writer {
            table,
            next_id: &mut next_id,
            out: &mut out,
        };
        for command in commands {
            batcher.push(command, &mut w);
        }
        batcher.flush(&mut w);
        written(&mut out)
    }

    fn kinds(requests: &[(u32, Request)]) -> Vec<String> {
        requests
            .iter()
            .map(|(_, r)| match r {
                Request::PublishBatch(b) => format!("batch {} x{}", b.channel, b.messages.len()),
                Request::Publish(p) => format!("publish {}", p.channel),
                Request::PublishAndStore(p) => format!("store {}", p.channel),
                other => other.operation().to_owned(),
            })
            .collect()
    }

    #[test]
    fn consecutive_publishes_with_the_same_options_go_out_as_one_batch_in_order() {
        let mut table = HashMap::new();
        let mut batcher = Batcher::new(PUBLISH_BATCH_VERSION, 36 * 1024);
        let (mut commands, mut answers) = (Vec::new(), Vec::new());
        for (channel, text, store) in [
            ("a", "1", false),
            ("a", "2", false),
            ("a", "3", false),
            ("b", "4", false),
            ("a", "5", true),
            ("a", "6", true),
        ] {
            let (command, answer) = publish(channel, text, store);
            commands.push(command);
            answers.push(answer);
        }
        let (reply, _ping) = oneshot::channel();
        commands.insert(
            4,
            Command {
                request: Request::Ping,
                reply,
            },
        );
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(
            kinds(&requests),
            ["batch a x3", "publish b", "ping", "batch a x2"]
        );
        let Request::PublishBatch(first) = &requests[0].1 else {
            unreachable!()
        };
        assert_eq!(
            first.messages,
            [Payload::from("1"), Payload::from("2"), Payload::from("3")]
        );
        assert!(!first.store);
        let Request::PublishBatch(last) = &requests[3].1 else {
            unreachable!()
        };
        assert!(last.store);

        // The first batch's answer completes its three calls, each with its own result.
        let refused = WireError::new(ErrorCode::ChannelPublishMessageTooFrequent, "slow down");
        let answer = Response::PublishBatch {
            results: vec![Ok(10), Err(refused.clone()), Ok(12)],
            timestamp: 12,
        };
        table.remove(&requests[0].0).unwrap().complete(Ok(answer));
        let got: Vec<_> = answers
            .drain(..3)
            .map(|mut a| a.try_recv().unwrap())
            .collect();
        let publish = |timestamp| {
            Ok(Response::Publish {
                channel: "a".into(),
                timestamp,
            })
        };
        assert_eq!(got, [publish(10), Err(refused), publish(12)]);
        // A batch refused as a whole fails each of its calls; a short answer fails the rest.
        let whole = WireError::new(ErrorCode::NotLogin, "not logged in");
        table
            .remove(&requests[3].0)
            .unwrap()
            .complete(Err(whole.clone()));
        assert_eq!(answers[1].try_recv().unwrap(), Err(whole.clone()));
        assert_eq!(answers[2].try_recv().unwrap(), Err(whole));
        let (replies, mut answers): (Vec<_>, Vec<_>) = (0..2).map(|_| oneshot::channel()).unzip();
        let short = Response::PublishBatch {
            results: vec![Ok(20)],
            timestamp: 20,
        };
        Waiting::Batch {
            channel: "a".into(),
            replies,
        }
        .complete(Ok(short));
        assert_eq!(answers[0].try_recv().unwrap(), publish(20));
        let left_out = answers[1].try_recv().unwrap().unwrap_err();
        assert_eq!(left_out.code, ErrorCode::InvalidParameter);
    }

    #[test]
    fn a_batch_stays_within_the_frame_limit_and_the_count_limit() {
        let mut table = HashMap::new();
        // Room for channel "a" and two 1 000-byte payloads after the head room, not three.
        let mut batcher = Batcher::new(
            PUBLISH_BATCH_VERSION,
            BATCH_HEAD_ROOM + 1 + 2 * (1000 + PER_MESSAGE),
        );
        let big = "x".repeat(1000);
        let commands = (0..5).map(|_| publish("a", &big, false).0).collect();
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(kinds(&requests), ["batch a x2", "batch a x2", "publish a"]);
        // The names count too: a longer channel name leaves room for one payload only.
        let long = "c".repeat(100);
        let commands = (0..2).map(|_| publish(&long, &big, false).0).collect();
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(requests.len(), 2, "{:?}", kinds(&requests));

        let mut batcher = Batcher::new(PUBLISH_BATCH_VERSION, 1 << 20);
        let commands = (0..MAX_PUBLISH_BATCH + 1)
            .map(|_| publish("a", "m", false).0)
            .collect();
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(
            kinds(&requests),
            [format!("batch a x{MAX_PUBLISH_BATCH}"), "publish a".into()]
        );

        // Unknown limit: every publish alone.
        let mut batcher = Batcher::new(PUBLISH_BATCH_VERSION, 0);
        let commands = (0..2).map(|_| publish("a", "m", false).0).collect();
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(kinds(&requests), ["publish a", "publish a"]);

        // A server that speaks an older protocol, without batches: every publish alone.
        let mut batcher = Batcher::new(PUBLISH_BATCH_VERSION - 1, 1 << 20);
        let commands = (0..2).map(|_| publish("a", "m", false).0).collect();
        let requests = write(&mut batcher, &mut table, commands);
        assert_eq!(kinds(&requests), ["publish a", "publish a"]);
    }
}
