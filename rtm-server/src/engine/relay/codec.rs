//! The messages of a relayed link and their encoding (see the module above).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What one end of a relayed link tells the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayBody {
    /// From the client's node: a new link; the client's transport needs protocol heartbeats.
    Open {
        /// See [`crate::transport`]'s `Link::needs_heartbeats`.
        needs_heartbeats: bool,
    },
    /// From the client's node: a frame the client sent.
    Frame(Bytes),
    /// From the client's node: a frame over the size limit (its first bytes).
    Oversized {
        /// Its length.
        len: u32,
        /// The limit.
        max: u32,
        /// Its first bytes.
        head: Bytes,
    },
    /// The client's connection ended (`lost: false`: closed normally), or the link broke
    /// (`lost: true`).
    Gone {
        /// Whether it counts as lost (the session waits for a resume).
        lost: bool,
    },
    /// From the session's node: encoded frames for the client's control channel.
    Control(Bytes),
    /// From the session's node: end the control channel.
    Finish,
    /// From the session's node: the session's events use this many lanes.
    Lanes(u8),
    /// From the session's node: a batch of `(lane, frame)` events.
    Events(Vec<(u8, Bytes)>),
    /// From the session's node: end the lanes.
    FinishLanes,
    /// From the session's node: close the client's connection with this code and reason.
    Close {
        /// A code of `docs/protocol.md` §1.3.
        code: u32,
        /// Why.
        reason: String,
    },
    /// Either end: still there.
    Beat,
}

impl RelayBody {
    /// Whether the body ends the link (accepted whatever its number: the link ends anyway).
    pub(super) fn is_final(&self) -> bool {
        matches!(self, Self::Gone { .. } | Self::Close { .. })
    }
}

/// One message of a link, as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayMsg {
    /// The link, unique in the cluster (the high bits name the node that opened it).
    pub link: u64,
    /// The node that sent it.
    pub from: u32,
    /// Its number in its direction, from 0.
    pub seq: u64,
    /// What it says.
    pub body: RelayBody,
}

mod kind {
    pub(super) const OPEN: u8 = b'o';
    pub(super) const FRAME: u8 = b'f';
    pub(super) const OVERSIZED: u8 = b'x';
    pub(super) const GONE: u8 = b'g';
    pub(super) const CONTROL: u8 = b'c';
    pub(super) const FINISH: u8 = b'F';
    pub(super) const LANES: u8 = b'l';
    pub(super) const EVENTS: u8 = b'e';
    pub(super) const FINISH_LANES: u8 = b'L';
    pub(super) const CLOSE: u8 = b'C';
    pub(super) const BEAT: u8 = b'b';
}

impl RelayMsg {
    /// The bytes to send: the link (8 bytes), the sender (4), the number (8), a kind byte and
    /// the kind's fields (integers big-endian; an event is its lane, its length in 4 bytes and
    /// its bytes; a trailing frame or text runs to the end).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        out.put_u64(self.link);
        out.put_u32(self.from);
        out.put_u64(self.seq);
        match &self.body {
            RelayBody::Open { needs_heartbeats } => {
                out.put_u8(kind::OPEN);
                out.put_u8(u8::from(*needs_heartbeats));
            }
            RelayBody::Frame(frame) => {
                out.put_u8(kind::FRAME);
                out.put_slice(frame);
            }
            RelayBody::Oversized { len, max, head } => {
                out.put_u8(kind::OVERSIZED);
                out.put_u32(*len);
                out.put_u32(*max);
                out.put_slice(head);
            }
            RelayBody::Gone { lost } => {
                out.put_u8(kind::GONE);
                out.put_u8(u8::from(*lost));
            }
            RelayBody::Control(frames) => {
                out.put_u8(kind::CONTROL);
                out.put_slice(frames);
            }
            RelayBody::Finish => out.put_u8(kind::FINISH),
            RelayBody::Lanes(n) => {
                out.put_u8(kind::LANES);
                out.put_u8(*n);
            }
            RelayBody::Events(events) => {
                out.reserve(events.iter().map(|(_, f)| 5 + f.len()).sum());
                out.put_u8(kind::EVENTS);
                for (lane, frame) in events {
                    out.put_u8(*lane);
                    // A frame is far below 4 GiB (the protocol's limit is in KiB).
                    out.put_u32(u32::try_from(frame.len()).unwrap_or(u32::MAX));
                    out.put_slice(frame);
                }
            }
            RelayBody::FinishLanes => out.put_u8(kind::FINISH_LANES),
            RelayBody::Close { code, reason } => {
                out.put_u8(kind::CLOSE);
                out.put_u32(*code);
                out.put_slice(reason.as_bytes());
            }
            RelayBody::Beat => out.put_u8(kind::BEAT),
        }
        out.freeze()
    }

    /// Reads a message; `None` if the bytes are not one.
    pub fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.remaining() < 21 {
            return None;
        }
        let link = bytes.get_u64();
        let from = bytes.get_u32();
        let seq = bytes.get_u64();
        let flag = |bytes: &mut Bytes| (bytes.remaining() == 1).then(|| bytes.get_u8() == 1);
        let body = match bytes.get_u8() {
            kind::OPEN => RelayBody::Open {
                needs_heartbeats: flag(&mut bytes)?,
            },
            kind::FRAME => RelayBody::Frame(bytes),
            kind::OVERSIZED => {
                if bytes.remaining() < 8 {
                    return None;
                }
                RelayBody::Oversized {
                    len: bytes.get_u32(),
                    max: bytes.get_u32(),
                    head: bytes,
                }
            }
            kind::GONE => RelayBody::Gone {
                lost: flag(&mut bytes)?,
            },
            kind::CONTROL => RelayBody::Control(bytes),
            kind::FINISH if bytes.is_empty() => RelayBody::Finish,
            kind::LANES if bytes.remaining() == 1 => RelayBody::Lanes(bytes.get_u8()),
            kind::EVENTS => {
                let mut events = Vec::new();
                while bytes.has_remaining() {
                    if bytes.remaining() < 5 {
                        return None;
                    }
                    let lane = bytes.get_u8();
                    let len = usize::try_from(bytes.get_u32()).ok()?;
                    if bytes.remaining() < len {
                        return None;
                    }
                    events.push((lane, bytes.split_to(len)));
                }
                RelayBody::Events(events)
            }
            kind::FINISH_LANES if bytes.is_empty() => RelayBody::FinishLanes,
            kind::CLOSE => {
                if bytes.remaining() < 4 {
                    return None;
                }
                let code = bytes.get_u32();
                RelayBody::Close {
                    code,
                    reason: String::from_utf8(bytes.to_vec()).ok()?,
                }
            }
            kind::BEAT if bytes.is_empty() => RelayBody::Beat,
            _ => return None,
        };
        Some(Self {
            link,
            from,
            seq,
            body,
        })
    }
}
