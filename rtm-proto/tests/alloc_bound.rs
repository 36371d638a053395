//! Decoding a hostile body never reserves memory from the counts it claims (issue 14, defect 9).
//!
//! A sequence on the wire is a varint count followed by the elements. A body that claims
//! thousands of elements and then breaks off must cost the decoder about what its bytes are
//! worth, not the claimed count times the element size. This file has its own counting global
//! allocator, which is why it is a test target of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rtm_proto::message::WireError;
use rtm_proto::{
    ChannelType, ClientMsg, ErrorCode, Event, IntervalDetail, LockEvent, LockEventType, MetadataOp,
    MetadataOptions, MetadataTarget, MetadataWrite, PresenceEvent, PresenceEventType, Request,
    RequestId, Response, ResumeRequest, ServerMsg, SessionTicket, StorageData, StorageEvent,
    StorageEventType, StorageType, TopicEvent, TopicEventType, encode_frame,
};

/// Counts the bytes allocated on the threads that asked for it, and their peak.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let live = LIVE.get() + n;
        LIVE.set(live);
        PEAK.set(PEAK.get().max(live));
    }
}

fn shrank(n: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        LIVE.set(LIVE.get().saturating_sub(n));
    }
}

// SAFETY: every call goes to `System` with the caller's arguments; the counting touches only
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as if old and new were both live for a moment, as when a copy is made.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The peak of bytes allocated by `f` on this thread.
fn peak_of(f: impl FnOnce()) -> usize {
    LIVE.set(0);
    PEAK.set(0);
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    PEAK.get()
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The body of `msg` cut just before the count of an empty sequence that `after` bytes of
/// other fields follow.
fn before_empty_seq<T: serde::Serialize>(msg: &T, after: usize) -> Vec<u8> {
    let frame = encode_frame(msg);
    let body = &frame[4..];
    let at = body.len() - after - 1;
    assert_eq!(
        body[at], 0,
        "no empty sequence {after} bytes before the end"
    );
    body[..at].to_vec()
}

/// How many elements a hostile body claims, and how many bytes follow the claim: postcard
/// reports a count as a size hint only when that many bytes remain.
const CLAIM: usize = 4096;

/// Bytes that fail at the first element: a varint that never ends (a string length, an enum
/// tag or an integer alike).
fn filler() -> Vec<u8> {
    vec![0xff; CLAIM]
}

/// `prefix`, a claim of `CLAIM` elements, then `element_head` (the start of the first element)
/// and filler.
fn claim(prefix: Vec<u8>, element_head: &[u8]) -> Vec<u8> {
    let mut body = prefix;
    varint(CLAIM as u64, &mut body);
    body.extend_from_slice(element_head);
    body.extend(filler());
    body
}

/// `prefix`, a claim of `CLAIM` elements whose first element starts with `element_head` and
/// then claims `CLAIM` elements of its own, then filler.
fn nested_claim(prefix: Vec<u8>, element_head: &[u8]) -> Vec<u8> {
    let mut head = element_head.to_vec();
    varint(CLAIM as u64, &mut head);
    claim(prefix, &head)
}

fn response(response: Response) -> ServerMsg {
    ServerMsg::Response {
        id: RequestId(1),
        result: Ok(response),
    }
}

fn presence(interval: Option<IntervalDetail>) -> ServerMsg {
    ServerMsg::Event(Event::Presence(PresenceEvent {
        event_type: PresenceEventType::Snapshot,
        channel_type: ChannelType::Message,
        channel_name: "c".into(),
        publisher: String::new(),
        state_changed: Default::default(),
        interval,
        snapshot: Vec::new(),
        timestamp: 0,
    }))
}

fn server_cases() -> Vec<(&'static str, Vec<u8>)> {
    let messages = before_empty_seq(
        &response(Response::Messages {
            messages: Vec::new(),
            new_start: 0,
            timestamp: 0,
        }),
        2,
    );
    let who_now = before_empty_seq(
        &response(Response::WhoNow {
            total_occupancy: 0,
            occupants: Vec::new(),
            next_page: String::new(),
            timestamp: 0,
        }),
        2,
    );
    let snapshot = before_empty_seq(&presence(None), 1);
    // The interval's user_state_list, after empty join, leave and timeout lists.
    let interval = before_empty_seq(&presence(Some(IntervalDetail::default())), 2);
    let metadata = before_empty_seq(
        &response(Response::Metadata {
            data: StorageData::default(),
            timestamp: 0,
        }),
        1,
    );
    let storage = before_empty_seq(
        &ServerMsg::Event(Event::Storage(StorageEvent {
            storage_type: StorageType::Channel,
            event_type: StorageEventType::Snapshot,
            channel_type: ChannelType::Message,
            channel_name: "c".into(),
            publisher: String::new(),
            data: StorageData::default(),
            timestamp: 0,
        })),
        1,
    );
    let topic = before_empty_seq(
        &ServerMsg::Event(Event::Topic(TopicEvent {
            event_type: TopicEventType::Snapshot,
            channel_name: "c".into(),
            publisher: String::new(),
            topic_infos: Vec::new(),
            timestamp: 0,
        })),
        1,
    );
    let locks = before_empty_seq(
        &response(Response::Locks {
            locks: Vec::new(),
            timestamp: 0,
        }),
        1,
    );
    let lock_event = before_empty_seq(
        &ServerMsg::Event(Event::Lock(LockEvent {
            channel_type: ChannelType::Message,
            event_type: LockEventType::Snapshot,
            channel_name: "c".into(),
            lock_name: String::new(),
            ttl: 0,
            owner: String::new(),
            publisher: String::new(),
            snapshot: Vec::new(),
            timestamp: 0,
        })),
        1,
    );
    let where_now = before_empty_seq(
        &response(Response::WhereNow {
            channels: Vec::new(),
            timestamp: 0,
        }),
        1,
    );
    let failed_users = before_empty_seq(
        &response(Response::SubscribeTopic {
            channel: "c".into(),
            topic: "t".into(),
            succeed_users: Vec::new(),
            failed_users: Vec::new(),
            timestamp: 0,
        }),
        1,
    );
    let next_frame = before_empty_seq(
        &response(Response::Resume {
            timestamp: 0,
            limits: rtm_proto::LoginLimits {
                max_message_size: 0,
                max_subscriptions: 0,
                publish_rate: 0,
                max_frame_len: 0,
            },
            next_frame: Vec::new(),
        }),
        0,
    );
    // Sanity: an error response decodes, so the prefixes above are built the same way.
    let error = ServerMsg::Response {
        id: RequestId(1),
        result: Err(WireError::new(ErrorCode::Unknown(-1), "")),
    };
    assert!(ServerMsg::decode(&encode_frame(&error)[4..]).is_ok());
    vec![
        ("history messages", claim(messages.clone(), &[])),
        // Three real (empty text) messages, then the break: they cost what they are.
        ("history messages, 3 real", claim(messages, &[0; 15])),
        ("who_now occupants", claim(who_now.clone(), &[])),
        // A user with an empty id whose state map claims many pairs.
        ("who_now occupant states", nested_claim(who_now, &[0])),
        ("presence snapshot", claim(snapshot, &[])),
        ("presence interval states", nested_claim(interval, &[0])),
        ("metadata items", claim(metadata, &[])),
        ("storage event items", claim(storage, &[])),
        // A topic with an empty name whose publishers claim many entries.
        ("topic infos and publishers", nested_claim(topic, &[0])),
        ("locks", claim(locks, &[])),
        ("lock snapshot", claim(lock_event, &[])),
        ("where_now channels", claim(where_now, &[])),
        ("subscribe_topic failed users", claim(failed_users, &[])),
        ("resume next_frame", claim(next_frame, &[])),
    ]
}

fn client_cases() -> Vec<(&'static str, Vec<u8>)> {
    let ack = before_empty_seq(
        &ClientMsg::Ack {
            received: Vec::new(),
        },
        0,
    );
    let write = before_empty_seq(
        &ClientMsg::Request {
            id: RequestId(1),
            request: Request::WriteMetadata(MetadataWrite {
                op: MetadataOp::Set,
                target: MetadataTarget::User {
                    user_id: "u".into(),
                },
                items: Vec::new(),
                options: MetadataOptions::default(),
            }),
        },
        4,
    );
    let users = before_empty_seq(
        &ClientMsg::Request {
            id: RequestId(1),
            request: Request::SubscribeTopic {
                channel: "c".into(),
                topic: "t".into(),
                users: Vec::new(),
            },
        },
        0,
    );
    let resume = before_empty_seq(
        &ClientMsg::Request {
            id: RequestId(1),
            request: Request::Resume(ResumeRequest {
                app_id: "a".into(),
                user_id: "u".into(),
                ticket: SessionTicket {
                    session_id: 1,
                    secret: [0; 16],
                },
                received: Vec::new(),
            }),
        },
        0,
    );
    vec![
        ("ack", claim(ack, &[])),
        ("metadata write items", claim(write, &[])),
        ("subscribe_topic users", claim(users, &[])),
        ("resume received", claim(resume, &[])),
    ]
}

/// What decoding `body.len()` bytes may allocate at most.
fn bound(len: usize) -> usize {
    16 * len + 4096
}

#[test]
fn hostile_counts_cost_what_the_bytes_are_worth() {
    let mut over = Vec::new();
    let mut check = |kind: &str, name: &str, body: &[u8], peak: usize| {
        eprintln!(
            "{kind:<10} {name:<30} {:>6} bytes in, peak {:>8} bytes allocated ({:.1}x)",
            body.len(),
            peak,
            peak as f64 / body.len() as f64
        );
        if peak > bound(body.len()) {
            over.push(format!("{kind} {name}: {peak} > {}", bound(body.len())));
        }
    };
    for (name, body) in server_cases() {
        let mut result = None;
        let peak = peak_of(|| result = Some(ServerMsg::decode(&body)));
        assert!(result.unwrap().is_err(), "{name} decoded");
        check("ServerMsg", name, &body, peak);
    }
    for (name, body) in client_cases() {
        let mut result = None;
        let peak = peak_of(|| result = Some(ClientMsg::decode(&body)));
        assert!(result.unwrap().is_err(), "{name} decoded");
        check("ClientMsg", name, &body, peak);
    }
    assert!(
        over.is_empty(),
        "allocated past the bound:\n{}",
        over.join("\n")
    );
}
