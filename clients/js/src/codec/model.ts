/**
 * The messages of the rtm wire protocol, version 1, as TypeScript values.
 *
 * These types mirror the Rust types of `rtm-proto` (`message.rs`, `presence.rs`, `stream.rs`,
 * `storage.rs`, `history.rs`), which are the reference for field order; `docs/protocol.md` §4
 * describes the same messages in prose. The codec in `./messages.ts` turns them into bytes and
 * back.
 *
 * How Rust shapes map onto TypeScript:
 *
 * - An enum whose variants carry data is a union discriminated by `kind`, whose value is the
 *   Rust variant's name. A variant that wraps a struct (`Login(LoginRequest)`) carries the
 *   struct's fields directly beside `kind`; a variant that wraps another enum names it
 *   (`{ kind: 'Event', event }`, `{ kind: 'Part', part }`); a variant that wraps a primitive
 *   keeps it in `value` (`{ kind: 'Text', value: 'hi' }`).
 * - An enum without data is a union of its variants' names (`'RemoteJoin'`).
 * - [`ChannelType`] is the number the wire carries: 1 message, 2 stream, 3 user.
 * - `u8`/`u16`/`u32`/`i32`/`u64`/`i64` are `number` (the decoder refuses a 64-bit value beyond
 *   `Number.MAX_SAFE_INTEGER`), except the session id of a [`SessionTicket`], a `bigint`.
 * - `map<string, string>` is a `Record<string, string>`; `Option<T>` is `T | null`.
 * - Field names are the Rust names in camelCase.
 *
 * Besides the types, this module defines only the `ChannelType` constants and [`CodecError`];
 * importing it has no side effects.
 */

// ---------------------------------------------------------------------------------------------
// Shared

/** The type of a channel, as its wire number: 1 message, 2 stream, 3 user. */
export type ChannelType = 1 | 2 | 3;

/** The named channel types, for readability at call sites. */
export const ChannelType = {
  /** A pub/sub message channel. */
  Message: 1,
  /** A stream channel with topics. */
  Stream: 2,
  /** The channel of one user: what is published to it reaches that user. */
  User: 3,
} as const;

/** A message payload: text, bytes, or either of them sealed end to end (§5.11). */
export type Payload =
  | { kind: 'Text'; value: string }
  | { kind: 'Binary'; value: Uint8Array }
  | { kind: 'Encrypted'; value: Uint8Array };

/** A user's temporary state in a channel: keys to values, kept sorted on the wire. */
export type StateDetail = Record<string, string>;

/** An error as it travels: a code of `docs/protocol.md` §7 and a human-readable reason. */
export interface WireError {
  /** The stable (negative) code, e.g. -11033. */
  code: number;
  /** Why, in words (may be empty). */
  reason: string;
}

// ---------------------------------------------------------------------------------------------
// Client to server (§4.2)

/** The first frame of a connection. */
export interface Hello {
  /** The protocol version the client speaks (1). */
  version: number;
  /** Free text naming the client library and version. */
  agent: string;
}

/** A frame from the client. */
export type ClientMsg =
  | ({ kind: 'Hello' } & Hello)
  | { kind: 'Request'; id: number; request: Request }
  | { kind: 'Ack'; received: number[] };

/** The login request. */
export interface LoginRequest {
  appId: string;
  userId: string;
  /** Empty for an app without an App Certificate. */
  token: string;
  useStringUserId: boolean;
  /** Seconds (u16). */
  heartbeatInterval: number;
  /** Seconds (u16). */
  presenceTimeout: number;
}

/** What resumes a session on a new connection, given at login. */
export interface SessionTicket {
  /** The session's id on the server (u64). */
  sessionId: bigint;
  /** Exactly 16 bytes, sent without a length prefix. */
  secret: Uint8Array;
}

/** The resume request (§5.6). */
export interface ResumeRequest {
  appId: string;
  userId: string;
  ticket: SessionTicket;
  /** Delivery-stream frames received so far, per lane. */
  received: number[];
}

/** Options of a message-channel subscription. */
export interface SubscribeOptions {
  withMessage: boolean;
  withPresence: boolean;
  beQuiet: boolean;
  withMetadata: boolean;
  withLock: boolean;
}

/** A publish to a message channel or a user. */
export interface PublishRequest {
  channelType: ChannelType;
  /** The channel name, or the target user id for a user channel. */
  channel: string;
  message: Payload;
  customType: string;
}

/** Several messages to one channel with the same options, served in order as publishes of
 * their own and answered once (§5.2.1); at most 64. */
export interface PublishBatch {
  channelType: ChannelType;
  channel: string;
  customType: string;
  /** Store every message in the channel's history. */
  store: boolean;
  messages: Payload[];
}

/** Options of a stream-channel join. */
export interface JoinOptions {
  token: string;
  withPresence: boolean;
  beQuiet: boolean;
  withMetadata: boolean;
  withLock: boolean;
}

/** Delivery of a topic's messages. */
export type TopicQos = 'Ordered' | 'Unordered';

/** Priority of a publisher's topic messages (advisory). */
export type TopicPriority = 'Highest' | 'High' | 'Normal' | 'Low';

/** Options of a topic join. */
export interface JoinTopicOptions {
  meta: string;
  qos: TopicQos;
  priority: TopicPriority;
}

/** A message to publish in a joined topic. */
export interface PublishTopicRequest {
  channel: string;
  topic: string;
  message: Payload;
  customType: string;
}

/** What a metadata write does with its items. */
export type MetadataOp = 'Set' | 'Update' | 'Remove';

/** Whose metadata set an operation is about. */
export type MetadataTarget =
  | { kind: 'Channel'; channelType: ChannelType; channel: string }
  | { kind: 'User'; userId: string };

/** An item as a write names it. */
export interface MetadataItem {
  key: string;
  value: string;
  /** -1: no check; 0: must not exist yet; positive: the expected revision (i64). */
  revision: number;
}

/** How a write treats the set and what the server records. */
export interface MetadataOptions {
  /** -1: no check; 0: the set must not exist yet; positive: the expected revision (i64). */
  majorRevision: number;
  lockName: string;
  addTimestamp: boolean;
  addUserId: boolean;
}

/** A metadata write (§5.9). */
export interface MetadataWrite {
  op: MetadataOp;
  target: MetadataTarget;
  items: MetadataItem[];
  options: MetadataOptions;
}

/** What a lock request does (§5.10). */
export type LockOp =
  | { kind: 'Set'; ttl: number }
  | { kind: 'Remove' }
  | { kind: 'Acquire'; retry: boolean }
  | { kind: 'Release' }
  | { kind: 'Revoke'; owner: string };

/** A lock request. */
export interface LockRequest {
  channelType: ChannelType;
  channel: string;
  lockName: string;
  op: LockOp;
}

/** A page of a channel's history (§5.12). */
export interface GetMessagesRequest {
  channelType: ChannelType;
  channel: string;
  /** 1–100; 0 means 100 (u32). */
  messageCount: number;
  /** Only messages strictly older than this (0: no bound). */
  start: number;
  /** Only messages at this time or newer (0: no bound). */
  end: number;
}

/** What a client can ask for; the wire index is the order below. */
export type Request =
  | ({ kind: 'Login' } & LoginRequest)
  | { kind: 'Logout' }
  | { kind: 'Subscribe'; channel: string; options: SubscribeOptions }
  | { kind: 'Unsubscribe'; channel: string }
  | ({ kind: 'Publish' } & PublishRequest)
  | { kind: 'Ping' }
  | { kind: 'RenewToken'; token: string }
  | { kind: 'Heartbeat'; received: number[] }
  | ({ kind: 'Resume' } & ResumeRequest)
  | { kind: 'Join'; channel: string; options: JoinOptions }
  | { kind: 'Leave'; channel: string }
  | { kind: 'JoinTopic'; channel: string; topic: string; options: JoinTopicOptions }
  | { kind: 'LeaveTopic'; channel: string; topic: string }
  | ({ kind: 'PublishTopic' } & PublishTopicRequest)
  | { kind: 'SubscribeTopic'; channel: string; topic: string; users: string[] }
  | { kind: 'UnsubscribeTopic'; channel: string; topic: string; users: string[] }
  | { kind: 'RenewChannelToken'; channel: string; token: string }
  | { kind: 'SetState'; channelType: ChannelType; channel: string; states: StateDetail }
  | { kind: 'GetState'; channelType: ChannelType; channel: string; userId: string }
  | { kind: 'RemoveState'; channelType: ChannelType; channel: string; keys: string[] }
  | {
      kind: 'WhoNow';
      channelType: ChannelType;
      channel: string;
      includeUserId: boolean;
      includeState: boolean;
      page: string;
    }
  | { kind: 'WhereNow'; userId: string }
  | ({ kind: 'WriteMetadata' } & MetadataWrite)
  | { kind: 'GetMetadata'; target: MetadataTarget }
  | { kind: 'SubscribeUserMetadata'; userId: string }
  | { kind: 'UnsubscribeUserMetadata'; userId: string }
  | ({ kind: 'Lock' } & LockRequest)
  | { kind: 'GetLocks'; channelType: ChannelType; channel: string }
  | ({ kind: 'PublishAndStore' } & PublishRequest)
  | ({ kind: 'GetMessages' } & GetMessagesRequest)
  | ({ kind: 'PublishBatch' } & PublishBatch);

// ---------------------------------------------------------------------------------------------
// Server to client (§4.3)

/** The server's answer to [`Hello`]. */
export interface Welcome {
  version: number;
  server: string;
}

/** The outcome of one request: Rust's `Result<Response, WireError>`. */
export type ResponseResult = { ok: true; response: Response } | { ok: false; error: WireError };

/** A frame from the server. */
export type ServerMsg =
  | ({ kind: 'Welcome' } & Welcome)
  | { kind: 'Response'; id: number; result: ResponseResult }
  | { kind: 'Event'; event: Event }
  | ({ kind: 'Error' } & WireError)
  | { kind: 'Lane'; lane: number };

/** The limits of the app, told at login. All u32. */
export interface LoginLimits {
  maxMessageSize: number;
  maxSubscriptions: number;
  publishRate: number;
  maxFrameLen: number;
}

/** A user a topic subscription could not include. */
export interface FailedUser {
  user: string;
  /** The reference's per-user code (i32). */
  errorCode: number;
  reason: string;
}

/** A present user and its state. */
export interface UserState {
  userId: string;
  states: StateDetail;
}

/** A channel a user is in. */
export interface ChannelDetail {
  channelName: string;
  channelType: ChannelType;
}

/** A stored metadata item. */
export interface StoredItem {
  key: string;
  value: string;
  /** i64. */
  revision: number;
  /** Milliseconds since the Unix epoch, or 0. */
  updated: number;
  authorUserId: string;
}

/** A whole metadata set, items in first-set order. */
export interface StorageData {
  /** i64; 0 for a set that does not exist. */
  majorRevision: number;
  items: StoredItem[];
}

/** A lock as `GetLocks` and snapshots show it. */
export interface LockDetail {
  lockName: string;
  owner: string;
  /** Seconds (u32). */
  ttl: number;
}

/** A stored message. */
export interface HistoryMessage {
  message: Payload;
  customType: string;
  publisher: string;
  timestamp: number;
}

/** A successful answer; every `timestamp` is server milliseconds since the Unix epoch. */
export type Response =
  | { kind: 'Login'; timestamp: number; limits: LoginLimits; ticket: SessionTicket }
  | { kind: 'Logout'; timestamp: number }
  | { kind: 'Subscribe'; channel: string; timestamp: number }
  | { kind: 'Unsubscribe'; channel: string; timestamp: number }
  | { kind: 'Publish'; channel: string; timestamp: number }
  | { kind: 'Pong'; timestamp: number }
  | { kind: 'RenewToken'; timestamp: number }
  | { kind: 'Resume'; timestamp: number; limits: LoginLimits; nextFrame: number[] }
  | { kind: 'Join'; channel: string; timestamp: number }
  | { kind: 'Leave'; channel: string; timestamp: number }
  | { kind: 'JoinTopic'; channel: string; topic: string; timestamp: number }
  | { kind: 'LeaveTopic'; channel: string; topic: string; timestamp: number }
  | { kind: 'PublishTopic'; channel: string; topic: string; timestamp: number }
  | {
      kind: 'SubscribeTopic';
      channel: string;
      topic: string;
      succeedUsers: string[];
      failedUsers: FailedUser[];
      timestamp: number;
    }
  | { kind: 'UnsubscribeTopic'; channel: string; topic: string; timestamp: number }
  | { kind: 'State'; timestamp: number }
  | { kind: 'GetState'; userId: string; states: StateDetail; timestamp: number }
  | {
      kind: 'WhoNow';
      totalOccupancy: number;
      occupants: UserState[];
      nextPage: string;
      timestamp: number;
    }
  | { kind: 'WhereNow'; channels: ChannelDetail[]; timestamp: number }
  | { kind: 'MetadataWritten'; totalCount: number; majorRevision: number; timestamp: number }
  | { kind: 'Metadata'; data: StorageData; timestamp: number }
  | { kind: 'Done'; timestamp: number }
  | { kind: 'Locks'; locks: LockDetail[]; timestamp: number }
  | { kind: 'Messages'; messages: HistoryMessage[]; newStart: number; timestamp: number }
  | { kind: 'PublishBatch'; results: PublishResult[]; timestamp: number };

/** One message of a [`PublishBatch`]: published at `timestamp`, or refused. */
export type PublishResult = { kind: 'Ok'; timestamp: number } | { kind: 'Err'; code: number; reason: string };

/** Why the server ended a session (close codes 0x10–0x13). */
export type CloseReason = 'SameUidLogin' | 'SlowConsumer' | 'ServerShutdown' | 'TokenExpired' | 'Kicked';

/** A message event. */
export interface MessageEvent {
  channelType: ChannelType;
  /** The channel; for a user-channel message, the publisher's user id. */
  channelName: string;
  /** The topic, for stream channels; empty otherwise. */
  topicName: string;
  message: Payload;
  customType: string;
  publisher: string;
  timestamp: number;
}

/** The kind of a topic event. */
export type TopicEventType = 'Snapshot' | 'RemoteJoin' | 'RemoteLeave';

/** A publisher in a topic. */
export interface PublisherInfo {
  userId: string;
  meta: string;
}

/** A topic and (some of) its publishers. */
export interface TopicInfo {
  topicName: string;
  publishers: PublisherInfo[];
}

/** Publishers joined or left topics of a stream channel. */
export interface TopicEvent {
  eventType: TopicEventType;
  channelName: string;
  publisher: string;
  topicInfos: TopicInfo[];
  timestamp: number;
}

/** The kind of a presence event. */
export type PresenceEventType =
  | 'Snapshot'
  | 'Interval'
  | 'RemoteJoin'
  | 'RemoteLeave'
  | 'RemoteTimeout'
  | 'RemoteStateChanged';

/** The changes of one period of interval mode. */
export interface IntervalDetail {
  join: string[];
  leave: string[];
  timeout: string[];
  userStateList: UserState[];
}

/** A presence event. */
export interface PresenceEvent {
  eventType: PresenceEventType;
  channelType: ChannelType;
  channelName: string;
  publisher: string;
  stateChanged: StateDetail;
  interval: IntervalDetail | null;
  snapshot: UserState[];
  timestamp: number;
}

/** Whose metadata a storage event is about. */
export type StorageType = 'User' | 'Channel';

/** The kind of a storage event. */
export type StorageEventType = 'Snapshot' | 'Set' | 'Update' | 'Remove';

/** A metadata set changed, or a session started listening to it. */
export interface StorageEvent {
  storageType: StorageType;
  eventType: StorageEventType;
  channelType: ChannelType;
  channelName: string;
  publisher: string;
  data: StorageData;
  timestamp: number;
}

/** The kind of a lock event. */
export type LockEventType = 'Snapshot' | 'Set' | 'Removed' | 'Acquired' | 'Released' | 'Expired';

/** A lock changed. */
export interface LockEvent {
  channelType: ChannelType;
  eventType: LockEventType;
  channelName: string;
  lockName: string;
  ttl: number;
  owner: string;
  publisher: string;
  snapshot: LockDetail[];
  timestamp: number;
}

/** Messages of a channel a resumed session missed (§5.12.1). */
export interface LostMessages {
  channelType: ChannelType;
  channelName: string;
  from: number;
  to: number;
  /** u32. */
  count: number;
}

/** A leading part of a split snapshot (§2.2); parts never nest. */
export type EventPart = ({ kind: 'Presence' } & PresenceEvent) | ({ kind: 'Topic' } & TopicEvent);

/** A server-pushed event. */
export type Event =
  | ({ kind: 'Message' } & MessageEvent)
  | { kind: 'SessionClosed'; reason: CloseReason }
  | { kind: 'TokenPrivilegeWillExpire'; channelName: string }
  | ({ kind: 'Topic' } & TopicEvent)
  | { kind: 'ChannelLeft'; channelType: ChannelType; channelName: string; reason: CloseReason }
  | ({ kind: 'Presence' } & PresenceEvent)
  | ({ kind: 'Storage' } & StorageEvent)
  | ({ kind: 'Lock' } & LockEvent)
  | ({ kind: 'MessagesLost' } & LostMessages)
  | { kind: 'Part'; part: EventPart };

// ---------------------------------------------------------------------------------------------
// Helpers

/** The variant of `ClientMsg` with this kind. */
export type ClientMsgOf<K extends ClientMsg['kind']> = Extract<ClientMsg, { kind: K }>;
/** The variant of `Request` with this kind. */
export type RequestOf<K extends Request['kind']> = Extract<Request, { kind: K }>;
/** The variant of `ServerMsg` with this kind. */
export type ServerMsgOf<K extends ServerMsg['kind']> = Extract<ServerMsg, { kind: K }>;
/** The variant of `Response` with this kind. */
export type ResponseOf<K extends Response['kind']> = Extract<Response, { kind: K }>;
/** The variant of `Event` with this kind. */
export type EventOf<K extends Event['kind']> = Extract<Event, { kind: K }>;

/** Kinds of codec failure, stable for callers to match on. */
export type CodecErrorCode =
  /** Bytes were left after a complete message. */
  | 'TrailingBytes'
  /** The input ended in the middle of a value. */
  | 'UnexpectedEnd'
  /** A varint is longer than its type allows, or its value does not fit the type. */
  | 'VarintOverflow'
  /** An enum variant index (or a channel type) this version does not know. */
  | 'UnknownVariant'
  /** A string is not valid UTF-8. */
  | 'InvalidUtf8'
  /** A bool byte other than 0 or 1. */
  | 'InvalidBool'
  /** An option tag other than 0 or 1. */
  | 'InvalidOption'
  /** A declared length (string, bytes, sequence, map) exceeds the bytes left. */
  | 'TooLong'
  /** A 64-bit integer beyond `Number.MAX_SAFE_INTEGER` where a `number` is expected. */
  | 'UnsafeInteger'
  /** A frame's declared length is above the reader's maximum. */
  | 'FrameTooLong'
  /** (Encoding) a value of the wrong type or out of its field's range. */
  | 'InvalidValue';

/** The one error the codec throws, for any malformed input or unencodable value. */
export class CodecError extends Error {
  /** Which kind of failure: stable, unlike the message. */
  readonly code: CodecErrorCode;

  constructor(code: CodecErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'CodecError';
    this.code = code;
  }
}
