//! Strategies that generate every `ClientMsg` and `ServerMsg`, shared by the property tests.

use bytes::Bytes;
use proptest::prelude::*;
use rtm_proto::message::{LoginRequest, WireError};
use rtm_proto::{
    ChannelType, ClientMsg, CloseReason, ErrorCode, Event, FailedUser, Hello, JoinOptions,
    JoinTopicOptions, LoginLimits, MessageEvent, Payload, PublishBatch, PublishRequest,
    PublishTopicRequest, PublisherInfo, Request, RequestId, Response, ResumeRequest, ServerMsg,
    SessionTicket, SubscribeOptions, TopicEvent, TopicEventType, TopicInfo, TopicPriority,
    TopicQos,
};
use rtm_proto::{GetMessagesRequest, HistoryMessage};
use rtm_proto::{IntervalDetail, PresenceEvent, PresenceEventType, StateDetail, UserState};
use rtm_proto::{
    LockDetail, LockEvent, LockEventType, LockOp, LockRequest, MetadataItem, MetadataOp,
    MetadataOptions, MetadataTarget, MetadataWrite, StorageData, StorageEvent, StorageEventType,
    StorageType, StoredItem,
};

fn metadata_target() -> impl Strategy<Value = MetadataTarget> {
    prop_oneof![
        (channel_type(), ".{0,20}").prop_map(|(channel_type, channel)| MetadataTarget::Channel {
            channel_type,
            channel
        }),
        ".{0,20}".prop_map(|user_id| MetadataTarget::User { user_id }),
    ]
}

fn storage_data() -> impl Strategy<Value = StorageData> {
    (
        any::<i64>(),
        prop::collection::vec(
            (".{0,8}", ".{0,20}", any::<i64>(), any::<u64>(), ".{0,10}"),
            0..4,
        ),
    )
        .prop_map(|(major_revision, items)| StorageData {
            major_revision,
            items: items
                .into_iter()
                .map(
                    |(key, value, revision, updated, author_user_id)| StoredItem {
                        key,
                        value,
                        revision,
                        updated,
                        author_user_id,
                    },
                )
                .collect(),
        })
}

fn lock_details() -> impl Strategy<Value = Vec<LockDetail>> {
    prop::collection::vec(
        (".{0,10}", ".{0,10}", any::<u32>()).prop_map(|(lock_name, owner, ttl)| LockDetail {
            lock_name,
            owner,
            ttl,
        }),
        0..4,
    )
}

/// The metadata and lock requests (`docs/protocol.md` §5.9, §5.10).
fn storage_request() -> BoxedStrategy<Request> {
    prop_oneof![
        (
            0..3u8,
            metadata_target(),
            prop::collection::vec((".{0,8}", ".{0,20}", any::<i64>()), 0..4),
            (any::<i64>(), ".{0,10}", any::<[bool; 2]>())
        )
            .prop_map(|(op, target, items, (major_revision, lock_name, add))| {
                Request::WriteMetadata(MetadataWrite {
                    op: [MetadataOp::Set, MetadataOp::Update, MetadataOp::Remove][usize::from(op)],
                    target,
                    items: items
                        .into_iter()
                        .map(|(key, value, revision)| MetadataItem {
                            key,
                            value,
                            revision,
                        })
                        .collect(),
                    options: MetadataOptions {
                        major_revision,
                        lock_name,
                        add_timestamp: add[0],
                        add_user_id: add[1],
                    },
                })
            }),
        metadata_target().prop_map(|target| Request::GetMetadata { target }),
        ".{0,20}".prop_map(|user_id| Request::SubscribeUserMetadata { user_id }),
        ".{0,20}".prop_map(|user_id| Request::UnsubscribeUserMetadata { user_id }),
        (
            channel_type(),
            ".{0,20}",
            ".{0,10}",
            prop_oneof![
                any::<u32>().prop_map(|ttl| LockOp::Set { ttl }),
                Just(LockOp::Remove),
                any::<bool>().prop_map(|retry| LockOp::Acquire { retry }),
                Just(LockOp::Release),
                ".{0,10}".prop_map(|owner| LockOp::Revoke { owner }),
            ]
        )
            .prop_map(|(channel_type, channel, lock_name, op)| {
                Request::Lock(LockRequest {
                    channel_type,
                    channel,
                    lock_name,
                    op,
                })
            }),
        (channel_type(), ".{0,20}").prop_map(|(channel_type, channel)| Request::GetLocks {
            channel_type,
            channel
        }),
        (channel_type(), ".{0,20}", payload(), ".{0,8}").prop_map(|(t, c, m, ct)| {
            Request::PublishAndStore(PublishRequest {
                channel_type: t,
                channel: c,
                message: m,
                custom_type: ct,
            })
        }),
        (
            channel_type(),
            ".{0,20}",
            ".{0,8}",
            any::<bool>(),
            prop::collection::vec(payload(), 0..4)
        )
            .prop_map(|(channel_type, channel, custom_type, store, messages)| {
                Request::PublishBatch(PublishBatch {
                    channel_type,
                    channel,
                    custom_type,
                    store,
                    messages,
                })
            }),
        (channel_type(), ".{0,20}", any::<u32>(), any::<[u64; 2]>()).prop_map(
            |(channel_type, channel, message_count, [start, end])| {
                Request::GetMessages(GetMessagesRequest {
                    channel_type,
                    channel,
                    message_count,
                    start,
                    end,
                })
            }
        ),
    ]
    .boxed()
}

fn state_detail() -> impl Strategy<Value = StateDetail> {
    prop::collection::btree_map(".{0,8}", ".{0,12}", 0..4)
}

/// The presence requests (`docs/protocol.md` §5.8).
fn presence_request() -> BoxedStrategy<Request> {
    prop_oneof![
        (channel_type(), ".{0,20}", state_detail()).prop_map(|(channel_type, channel, states)| {
            Request::SetState {
                channel_type,
                channel,
                states,
            }
        }),
        (channel_type(), ".{0,20}", ".{0,10}").prop_map(|(channel_type, channel, user_id)| {
            Request::GetState {
                channel_type,
                channel,
                user_id,
            }
        }),
        (
            channel_type(),
            ".{0,20}",
            prop::collection::vec(".{0,8}", 0..4)
        )
            .prop_map(|(channel_type, channel, keys)| Request::RemoveState {
                channel_type,
                channel,
                keys,
            }),
    ]
    .boxed()
}

/// The stream-channel requests (`docs/protocol.md` §5.7).
fn stream_request() -> BoxedStrategy<Request> {
    let users = || prop::collection::vec(".{0,10}", 0..5);
    prop_oneof![
        (".{0,20}", ".{0,30}", any::<[bool; 4]>()).prop_map(|(channel, token, b)| {
            Request::Join {
                channel,
                options: JoinOptions {
                    token,
                    with_presence: b[0],
                    be_quiet: b[1],
                    with_metadata: b[2],
                    with_lock: b[3],
                },
            }
        }),
        ".{0,20}".prop_map(|channel| Request::Leave { channel }),
        (".{0,20}", ".{0,16}", ".{0,30}", any::<bool>(), 0..4u8).prop_map(
            |(channel, topic, meta, unordered, priority)| Request::JoinTopic {
                channel,
                topic,
                options: JoinTopicOptions {
                    meta,
                    qos: if unordered {
                        TopicQos::Unordered
                    } else {
                        TopicQos::Ordered
                    },
                    priority: [
                        TopicPriority::Highest,
                        TopicPriority::High,
                        TopicPriority::Normal,
                        TopicPriority::Low,
                    ][usize::from(priority)],
                },
            }
        ),
        (".{0,20}", ".{0,16}").prop_map(|(channel, topic)| Request::LeaveTopic { channel, topic }),
        (".{0,20}", ".{0,16}", payload(), ".{0,8}").prop_map(|(channel, topic, message, ct)| {
            Request::PublishTopic(PublishTopicRequest {
                channel,
                topic,
                message,
                custom_type: ct,
            })
        }),
        (".{0,20}", ".{0,16}", users()).prop_map(|(channel, topic, users)| {
            Request::SubscribeTopic {
                channel,
                topic,
                users,
            }
        }),
        (".{0,20}", ".{0,16}", users()).prop_map(|(channel, topic, users)| {
            Request::UnsubscribeTopic {
                channel,
                topic,
                users,
            }
        }),
        (".{0,20}", ".{0,30}")
            .prop_map(|(channel, token)| Request::RenewChannelToken { channel, token }),
    ]
    .boxed()
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        ".{0,40}".prop_map(Payload::Text),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|v| Payload::Binary(Bytes::from(v))),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|v| Payload::Encrypted(Bytes::from(v))),
    ]
}

fn channel_type() -> impl Strategy<Value = ChannelType> {
    prop_oneof![
        Just(ChannelType::Message),
        Just(ChannelType::Stream),
        Just(ChannelType::User)
    ]
}

fn request() -> BoxedStrategy<Request> {
    prop_oneof![
        (
            ".{0,20}",
            ".{0,20}",
            ".{0,40}",
            any::<bool>(),
            any::<[u16; 2]>()
        )
            .prop_map(|(a, u, t, s, times)| {
                Request::Login(LoginRequest {
                    app_id: a,
                    user_id: u,
                    token: t,
                    use_string_user_id: s,
                    heartbeat_interval: times[0],
                    presence_timeout: times[1],
                })
            }),
        Just(Request::Logout),
        (".{0,20}", any::<[bool; 5]>()).prop_map(|(channel, b)| Request::Subscribe {
            channel,
            options: SubscribeOptions {
                with_message: b[0],
                with_presence: b[1],
                be_quiet: b[2],
                with_metadata: b[3],
                with_lock: b[4],
            },
        }),
        ".{0,20}".prop_map(|channel| Request::Unsubscribe { channel }),
        (channel_type(), ".{0,20}", payload(), ".{0,8}").prop_map(|(t, c, m, ct)| {
            Request::Publish(PublishRequest {
                channel_type: t,
                channel: c,
                message: m,
                custom_type: ct,
            })
        }),
        Just(Request::Ping),
        ".{0,40}".prop_map(|token| Request::RenewToken { token }),
        prop::collection::vec(any::<u64>(), 0..17)
            .prop_map(|received| Request::Heartbeat { received }),
        (
            ".{0,20}",
            ".{0,20}",
            ticket(),
            prop::collection::vec(any::<u64>(), 0..17)
        )
            .prop_map(|(app_id, user_id, ticket, received)| Request::Resume(
                ResumeRequest {
                    app_id,
                    user_id,
                    ticket,
                    received,
                }
            )),
    ]
    .boxed()
}

/// Any client message.
pub(crate) fn client_msg() -> BoxedStrategy<ClientMsg> {
    prop_oneof![
        (any::<u16>(), ".{0,20}")
            .prop_map(|(version, agent)| ClientMsg::Hello(Hello { version, agent })),
        (
            any::<u32>(),
            prop_oneof![
                request(),
                stream_request(),
                presence_request(),
                storage_request()
            ]
        )
            .prop_map(|(id, request)| {
                ClientMsg::Request {
                    id: RequestId(id),
                    request,
                }
            }),
        prop::collection::vec(any::<u64>(), 0..17).prop_map(|received| ClientMsg::Ack { received }),
    ]
    .boxed()
}

fn ticket() -> impl Strategy<Value = SessionTicket> {
    (any::<u64>(), any::<[u8; 16]>())
        .prop_map(|(session_id, secret)| SessionTicket { session_id, secret })
}

fn limits() -> impl Strategy<Value = LoginLimits> {
    any::<[u32; 4]>().prop_map(|l| LoginLimits {
        max_message_size: l[0],
        max_subscriptions: l[1],
        publish_rate: l[2],
        max_frame_len: l[3],
    })
}

/// Any server message.
pub(crate) fn server_msg() -> BoxedStrategy<ServerMsg> {
    let response = prop_oneof![
        (any::<u64>(), limits(), ticket()).prop_map(|(timestamp, limits, ticket)| {
            Response::Login {
                timestamp,
                limits,
                ticket,
            }
        }),
        (
            any::<u64>(),
            limits(),
            prop::collection::vec(any::<u64>(), 0..17)
        )
            .prop_map(|(timestamp, limits, next_frame)| {
                Response::Resume {
                    timestamp,
                    limits,
                    next_frame,
                }
            }),
        any::<u64>().prop_map(|timestamp| Response::Logout { timestamp }),
        (".{0,20}", any::<u64>())
            .prop_map(|(channel, timestamp)| Response::Publish { channel, timestamp }),
        any::<u64>().prop_map(|timestamp| Response::Pong { timestamp }),
        any::<u64>().prop_map(|timestamp| Response::RenewToken { timestamp }),
        (".{0,20}", any::<u64>())
            .prop_map(|(channel, timestamp)| Response::Join { channel, timestamp }),
        (".{0,10}", state_detail(), any::<u64>()).prop_map(|(user_id, states, timestamp)| {
            Response::GetState {
                user_id,
                states,
                timestamp,
            }
        }),
        (".{0,20}", ".{0,16}", any::<u64>()).prop_map(|(channel, topic, timestamp)| {
            Response::PublishTopic {
                channel,
                topic,
                timestamp,
            }
        }),
        (
            ".{0,20}",
            ".{0,16}",
            prop::collection::vec(".{0,10}", 0..4),
            prop::collection::vec((".{0,10}", any::<i32>(), ".{0,20}"), 0..4),
            any::<u64>()
        )
            .prop_map(|(channel, topic, succeed_users, failed, timestamp)| {
                Response::SubscribeTopic {
                    channel,
                    topic,
                    succeed_users,
                    failed_users: failed
                        .into_iter()
                        .map(|(user, error_code, reason)| FailedUser {
                            user,
                            error_code,
                            reason,
                        })
                        .collect(),
                    timestamp,
                }
            }),
    ];
    let response = prop_oneof![
        response,
        (any::<u32>(), any::<i64>(), any::<u64>()).prop_map(
            |(total_count, major_revision, timestamp)| Response::MetadataWritten {
                total_count,
                major_revision,
                timestamp,
            }
        ),
        (storage_data(), any::<u64>())
            .prop_map(|(data, timestamp)| Response::Metadata { data, timestamp }),
        any::<u64>().prop_map(|timestamp| Response::Done { timestamp }),
        (lock_details(), any::<u64>())
            .prop_map(|(locks, timestamp)| Response::Locks { locks, timestamp }),
        (
            prop::collection::vec((payload(), ".{0,8}", ".{0,10}", any::<u64>()), 0..4),
            any::<[u64; 2]>()
        )
            .prop_map(|(messages, [new_start, timestamp])| Response::Messages {
                messages: messages
                    .into_iter()
                    .map(
                        |(message, custom_type, publisher, timestamp)| HistoryMessage {
                            message,
                            custom_type,
                            publisher,
                            timestamp,
                        }
                    )
                    .collect(),
                new_start,
                timestamp,
            }),
        (
            prop::collection::vec(
                prop_oneof![
                    any::<u64>().prop_map(Ok),
                    (prop::sample::select(ErrorCode::ALL), ".{0,30}")
                        .prop_map(|(code, reason)| Err(WireError { code, reason })),
                ],
                0..4
            ),
            any::<u64>()
        )
            .prop_map(|(results, timestamp)| Response::PublishBatch { results, timestamp }),
    ];
    let error = (prop::sample::select(ErrorCode::ALL), ".{0,30}")
        .prop_map(|(code, reason)| WireError { code, reason });
    let event = prop_oneof![
        (
            channel_type(),
            ".{0,20}",
            payload(),
            ".{0,8}",
            ".{0,20}",
            any::<u64>()
        )
            .prop_map(
                |(channel_type, channel_name, message, custom_type, publisher, timestamp)| {
                    Event::Message(MessageEvent {
                        channel_type,
                        channel_name,
                        topic_name: String::new(),
                        message,
                        custom_type,
                        publisher,
                        timestamp,
                    })
                }
            ),
        Just(Event::SessionClosed {
            reason: CloseReason::SameUidLogin
        }),
        (
            0..3u8,
            ".{0,20}",
            ".{0,10}",
            prop::collection::vec(
                (
                    ".{0,16}",
                    prop::collection::vec((".{0,10}", ".{0,20}"), 0..3)
                ),
                0..3
            ),
            any::<u64>()
        )
            .prop_map(|(kind, channel_name, publisher, infos, timestamp)| {
                Event::Topic(TopicEvent {
                    event_type: [
                        TopicEventType::Snapshot,
                        TopicEventType::RemoteJoin,
                        TopicEventType::RemoteLeave,
                    ][usize::from(kind)],
                    channel_name,
                    publisher,
                    topic_infos: infos
                        .into_iter()
                        .map(|(topic_name, publishers)| TopicInfo {
                            topic_name,
                            publishers: publishers
                                .into_iter()
                                .map(|(user_id, meta)| PublisherInfo { user_id, meta })
                                .collect(),
                        })
                        .collect(),
                    timestamp,
                })
            }),
        (
            channel_type(),
            ".{0,20}",
            ".{0,10}",
            state_detail(),
            any::<u64>()
        )
            .prop_map(
                |(channel_type, channel_name, publisher, state, timestamp)| {
                    Event::Presence(PresenceEvent {
                        event_type: PresenceEventType::Interval,
                        channel_type,
                        channel_name,
                        publisher,
                        state_changed: state.clone(),
                        interval: Some(IntervalDetail {
                            join: vec!["j".into()],
                            leave: Vec::new(),
                            timeout: vec!["t".into()],
                            user_state_list: vec![UserState {
                                user_id: "u".into(),
                                states: state,
                            }],
                        }),
                        snapshot: Vec::new(),
                        timestamp,
                    })
                }
            ),
        (
            any::<bool>(),
            channel_type(),
            ".{0,20}",
            ".{0,10}",
            storage_data(),
            any::<u64>()
        )
            .prop_map(
                |(user, channel_type, channel_name, publisher, data, timestamp)| {
                    Event::Storage(StorageEvent {
                        storage_type: if user {
                            StorageType::User
                        } else {
                            StorageType::Channel
                        },
                        event_type: if user {
                            StorageEventType::Snapshot
                        } else {
                            StorageEventType::Update
                        },
                        channel_type,
                        channel_name,
                        publisher,
                        data,
                        timestamp,
                    })
                }
            ),
        (
            (channel_type(), 0..6u8),
            ".{0,20}",
            ".{0,10}",
            any::<u32>(),
            (".{0,10}", ".{0,10}"),
            lock_details(),
            any::<u64>()
        )
            .prop_map(
                |(
                    (channel_type, kind),
                    channel_name,
                    lock_name,
                    ttl,
                    (owner, publisher),
                    snapshot,
                    timestamp,
                )| {
                    Event::Lock(LockEvent {
                        channel_type,
                        event_type: [
                            LockEventType::Snapshot,
                            LockEventType::Set,
                            LockEventType::Removed,
                            LockEventType::Acquired,
                            LockEventType::Released,
                            LockEventType::Expired,
                        ][usize::from(kind)],
                        channel_name,
                        lock_name,
                        ttl,
                        owner,
                        publisher,
                        snapshot,
                        timestamp,
                    })
                }
            ),
        (channel_type(), ".{0,20}", any::<[u64; 2]>(), any::<u32>()).prop_map(
            |(channel_type, channel_name, [from, to], count)| {
                Event::MessagesLost(rtm_proto::LostMessages {
                    channel_type,
                    channel_name,
                    from,
                    to,
                    count,
                })
            }
        ),
        (channel_type(), ".{0,20}").prop_map(|(channel_type, channel_name)| {
            Event::ChannelLeft {
                channel_type,
                channel_name,
                reason: CloseReason::TokenExpired,
            }
        }),
    ];
    prop_oneof![
        (any::<u32>(), response).prop_map(|(id, r)| ServerMsg::Response {
            id: RequestId(id),
            result: Ok(r)
        }),
        (any::<u32>(), error.clone()).prop_map(|(id, e)| ServerMsg::Response {
            id: RequestId(id),
            result: Err(e)
        }),
        event.prop_map(ServerMsg::Event),
        error.prop_map(ServerMsg::Error),
        any::<u8>().prop_map(|lane| ServerMsg::Lane { lane }),
    ]
    .boxed()
}
