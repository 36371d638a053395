//! What nodes send each other through Redis pub/sub: an already-encoded frame with a few bytes
//! saying whom it is for (`docs/architecture.md`, "Cluster").
//!
//! A channel's bus carries the channel's events; a node's inbox carries what is for one
//! session there. Layout: one kind byte, then the kind's fields (integers big-endian, strings
//! as a 2-byte length and UTF-8), then the frame to the end. Anything that does not parse is
//! dropped by the receiver (and counted), never trusted.

use bytes::{BufMut, Bytes, BytesMut};

use rtm_proto::CloseReason;

use crate::engine::SessionId;

/// A message on a bus or inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Envelope {
    /// A message event for the channel's subscribers that take messages.
    Message(Bytes),
    /// A presence event for the channel's members that take presence, but `except`.
    Presence { except: SessionId, frame: Bytes },
    /// An event for every member of a stream channel but `except`.
    Stream { except: SessionId, frame: Bytes },
    /// A topic message of `publisher` (a session on any node) for its audience.
    Topic {
        publisher: SessionId,
        topic: String,
        frame: Bytes,
    },
    /// A topic's publishers changed: the whole new list (written by a script, `topics.rs`).
    Topics(TopicList),
    /// A change of a metadata set (an encoded storage event), made by the write of `revision`.
    Storage { revision: i64, frame: Bytes },
    /// A user-channel message (or any event) for the session of `user` in `app`.
    ToUser {
        app: String,
        user: String,
        frame: Bytes,
    },
    /// Close `session` (of `user` in `app`), telling its client `reason`: the same user logged
    /// in on another node, or an operator disconnected the user.
    Kick {
        app: String,
        user: String,
        session: SessionId,
        reason: CloseReason,
    },
    /// A change of a channel's locks (an encoded lock event), by the commit of `version`.
    Lock { version: i64, frame: Bytes },
    /// The answer to a waiting acquire of `session` (of `user`): the lock is its user's now
    /// (`granted`) or was removed.
    LockGrant(LockGrant),
    /// A message of a connection relayed between nodes (an encoded
    /// [`crate::engine::relay::RelayMsg`]).
    Relay(Bytes),
}

/// See [`Envelope::LockGrant`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LockGrant {
    pub(super) session: SessionId,
    pub(super) granted: bool,
    pub(super) app: String,
    pub(super) user: String,
    pub(super) channel_type: rtm_proto::ChannelType,
    pub(super) lock_name: String,
    pub(super) channel: String,
}

/// A topic's publishers, as a script publishes them: kind `L`, then the topic, the version and
/// each entry (`sid\nuser\nmeta`), every string behind its length in 8 hexadecimal digits and the
/// version in 16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TopicList {
    pub(super) topic: String,
    pub(super) version: u64,
    pub(super) entries: Vec<String>,
}

const MESSAGE: u8 = b'M';
const TOPIC: u8 = b'T';
const TOPICS: u8 = b'L';
const STORAGE: u8 = b'D';
const PRESENCE: u8 = b'P';
const STREAM: u8 = b'S';
const TO_USER: u8 = b'U';
const KICK: u8 = b'K';
const LOCK: u8 = b'C';
const LOCK_GRANT: u8 = b'G';
const RELAY: u8 = b'R';

fn type_byte(channel_type: rtm_proto::ChannelType) -> u8 {
    match channel_type {
        rtm_proto::ChannelType::Message => 0,
        rtm_proto::ChannelType::Stream => 1,
        rtm_proto::ChannelType::User => 2,
    }
}

fn channel_type(byte: u8) -> Option<rtm_proto::ChannelType> {
    Some(match byte {
        0 => rtm_proto::ChannelType::Message,
        1 => rtm_proto::ChannelType::Stream,
        2 => rtm_proto::ChannelType::User,
        _ => return None,
    })
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Names are validated well below 64 KiB; a longer one would not be sent at all.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&s.as_bytes()[..usize::from(len)]);
}

impl Envelope {
    /// The bytes to publish.
    pub(super) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Self::Message(frame) => {
                out.reserve(1 + frame.len());
                out.put_u8(MESSAGE);
                out.put_slice(frame);
            }
            Self::Presence { except, frame } | Self::Stream { except, frame } => {
                out.reserve(9 + frame.len());
                let kind = if matches!(self, Self::Presence { .. }) {
                    PRESENCE
                } else {
                    STREAM
                };
                out.put_u8(kind);
                out.put_u64(except.0);
                out.put_slice(frame);
            }
            Self::Topic {
                publisher,
                topic,
                frame,
            } => {
                out.reserve(11 + topic.len() + frame.len());
                out.put_u8(TOPIC);
                out.put_u64(publisher.0);
                put_str(&mut out, topic);
                out.put_slice(frame);
            }
            Self::Storage { revision, frame } => {
                out.reserve(9 + frame.len());
                out.put_u8(STORAGE);
                out.put_i64(*revision);
                out.put_slice(frame);
            }
            Self::Topics(list) => {
                out.put_u8(TOPICS);
                out.put_slice(format!("{:08x}", list.topic.len()).as_bytes());
                out.put_slice(list.topic.as_bytes());
                out.put_slice(format!("{:016x}", list.version).as_bytes());
                for e in &list.entries {
                    out.put_slice(format!("{:08x}", e.len()).as_bytes());
                    out.put_slice(e.as_bytes());
                }
            }
            Self::ToUser { app, user, frame } => {
                out.reserve(5 + app.len() + user.len() + frame.len());
                out.put_u8(TO_USER);
                put_str(&mut out, app);
                put_str(&mut out, user);
                out.put_slice(frame);
            }
            Self::Kick {
                app,
                user,
                session,
                reason,
            } => {
                out.put_u8(KICK);
                put_str(&mut out, app);
                put_str(&mut out, user);
                out.put_u64(session.0);
                out.put_u8(match reason {
                    CloseReason::Kicked => 1,
                    _ => 0,
                });
            }
            Self::Lock { version, frame } => {
                out.reserve(9 + frame.len());
                out.put_u8(LOCK);
                out.put_i64(*version);
                out.put_slice(frame);
            }
            Self::LockGrant(g) => {
                out.put_u8(LOCK_GRANT);
                out.put_u64(g.session.0);
                out.put_u8(u8::from(g.granted));
                out.put_u8(type_byte(g.channel_type));
                put_str(&mut out, &g.app);
                put_str(&mut out, &g.user);
                put_str(&mut out, &g.lock_name);
                put_str(&mut out, &g.channel);
            }
            Self::Relay(msg) => {
                out.reserve(1 + msg.len());
                out.put_u8(RELAY);
                out.put_slice(msg);
            }
        }
        out.freeze()
    }

    /// Reads an envelope; `None` if the bytes are not one.
    pub(super) fn decode(bytes: Bytes) -> Option<Self> {
        let mut r = Reader(bytes);
        let envelope = match r.u8()? {
            MESSAGE => Self::Message(r.rest()),
            PRESENCE => Self::Presence {
                except: SessionId(r.u64()?),
                frame: r.rest(),
            },
            STREAM => Self::Stream {
                except: SessionId(r.u64()?),
                frame: r.rest(),
            },
            TOPIC => Self::Topic {
                publisher: SessionId(r.u64()?),
                topic: r.string()?,
                frame: r.rest(),
            },
            STORAGE => Self::Storage {
                revision: r.u64()? as i64,
                frame: r.rest(),
            },
            TOPICS => {
                let topic = r.hex_string()?;
                let version = r.hex(16)?;
                let mut entries = Vec::new();
                while !r.0.is_empty() {
                    entries.push(r.hex_string()?);
                }
                Self::Topics(TopicList {
                    topic,
                    version,
                    entries,
                })
            }
            TO_USER => Self::ToUser {
                app: r.string()?,
                user: r.string()?,
                frame: r.rest(),
            },
            KICK => {
                let kick = Self::Kick {
                    app: r.string()?,
                    user: r.string()?,
                    session: SessionId(r.u64()?),
                    reason: match r.u8()? {
                        0 => CloseReason::SameUidLogin,
                        1 => CloseReason::Kicked,
                        _ => return None,
                    },
                };
                if !r.0.is_empty() {
                    return None;
                }
                kick
            }
            LOCK => Self::Lock {
                version: r.u64()? as i64,
                frame: r.rest(),
            },
            LOCK_GRANT => {
                let grant = LockGrant {
                    session: SessionId(r.u64()?),
                    granted: r.u8()? == 1,
                    channel_type: channel_type(r.u8()?)?,
                    app: r.string()?,
                    user: r.string()?,
                    lock_name: r.string()?,
                    channel: r.string()?,
                };
                if !r.0.is_empty() {
                    return None;
                }
                Self::LockGrant(grant)
            }
            RELAY => Self::Relay(r.rest()),
            _ => return None,
        };
        Some(envelope)
    }
}

struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (self.0.len() >= n).then(|| self.0.split_to(n))
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_be_bytes(b.as_ref().try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// A number in `digits` hexadecimal digits.
    fn hex(&mut self, digits: usize) -> Option<u64> {
        let text = self.take(digits)?;
        u64::from_str_radix(std::str::from_utf8(&text).ok()?, 16).ok()
    }

    /// A string behind its length in 8 hexadecimal digits.
    fn hex_string(&mut self) -> Option<String> {
        let len = usize::try_from(self.hex(8)?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Envelope> {
        let frame = Bytes::from_static(b"\x00\x01frame");
        vec![
            Envelope::Message(frame.clone()),
            Envelope::Presence {
                except: SessionId::new(3, 9),
                frame: frame.clone(),
            },
            Envelope::Stream {
                except: SessionId(0),
                frame: frame.clone(),
            },
            Envelope::ToUser {
                app: "app".into(),
                user: "bob".into(),
                frame: Bytes::new(),
            },
            Envelope::Topic {
                publisher: SessionId::new(2, 5),
                topic: "t".into(),
                frame: frame.clone(),
            },
            Envelope::Storage {
                revision: 42,
                frame: frame.clone(),
            },
            Envelope::Topics(TopicList {
                topic: "video".into(),
                version: 7,
                entries: vec!["1\nalice\n".into(), "2\nbob\nmeta\nwith newline".into()],
            }),
            Envelope::Kick {
                app: "app".into(),
                user: "bob".into(),
                session: SessionId::new(1, 2),
                reason: CloseReason::SameUidLogin,
            },
            Envelope::Kick {
                app: "app".into(),
                user: "carol".into(),
                session: SessionId::new(1, 3),
                reason: CloseReason::Kicked,
            },
            Envelope::Lock {
                version: 3,
                frame: frame.clone(),
            },
            Envelope::LockGrant(LockGrant {
                session: SessionId::new(4, 1),
                granted: true,
                app: "app".into(),
                user: "carol".into(),
                channel_type: rtm_proto::ChannelType::Stream,
                lock_name: "floor".into(),
                channel: "room".into(),
            }),
        ]
    }

    #[test]
    fn every_kind_reads_back() {
        for envelope in all() {
            assert_eq!(Envelope::decode(envelope.encode()), Some(envelope));
        }
    }

    #[test]
    fn cut_or_unknown_bytes_are_refused_without_panic() {
        assert_eq!(Envelope::decode(Bytes::new()), None);
        assert_eq!(Envelope::decode(Bytes::from_static(b"Z")), None);
        for envelope in all() {
            let bytes = envelope.encode();
            // Every prefix either fails or (for kinds that end in a frame) reads a shorter one.
            for cut in 0..bytes.len() {
                if let Some(read) = Envelope::decode(bytes.slice(..cut)) {
                    assert!(
                        !matches!(read, Envelope::Kick { .. } | Envelope::LockGrant(_)),
                        "{read:?}"
                    );
                    if let (Envelope::Topics(whole), Envelope::Topics(part)) = (&envelope, &read) {
                        // Cut between entries: fewer of them, never a damaged one.
                        assert!(part.entries.len() < whole.entries.len());
                        assert!(whole.entries.starts_with(&part.entries));
                    }
                }
            }
        }
        let mut bad_utf8 = vec![TO_USER, 0, 1, 0xff, 0, 0];
        bad_utf8.extend_from_slice(b"frame");
        assert_eq!(Envelope::decode(Bytes::from(bad_utf8)), None);
    }
}
