/**
 * The wire description of the server's messages (`docs/protocol.md` §4.3): [`ServerMsg`], every
 * [`Response`] and every [`Event`], in the field order and with the variant indexes of
 * `rtm-proto`.
 */

import {
  CodecError,
  type ChannelDetail,
  type CloseReason,
  type Event,
  type EventPart,
  type FailedUser,
  type HistoryMessage,
  type LockDetail,
  type LockEvent,
  type LockEventType,
  type LoginLimits,
  type LostMessages,
  type MessageEvent,
  type PresenceEvent,
  type PresenceEventType,
  type PublisherInfo,
  type PublishResult,
  type Response,
  type ResponseResult,
  type ServerMsg,
  type StorageData,
  type StorageEvent,
  type StorageEventType,
  type StorageType,
  type StoredItem,
  type TopicEvent,
  type TopicEventType,
  type TopicInfo,
  type UserState,
} from './model.js';
import { sessionTicket } from './client.js';
import {
  channelType,
  type Codec,
  type Fields,
  i32,
  i64,
  names,
  option,
  payload,
  seq,
  string,
  stringMap,
  strings,
  struct,
  u16,
  u32,
  u64,
  u64s,
  u8,
  union,
  wireError,
} from './schema.js';

const loginLimits = struct<LoginLimits>('LoginLimits', {
  maxMessageSize: u32,
  maxSubscriptions: u32,
  publishRate: u32,
  maxFrameLen: u32,
});

const userState = struct<UserState>('UserState', { userId: string, states: stringMap });

const storageData = struct<StorageData>('StorageData', {
  majorRevision: i64,
  items: seq(
    struct<StoredItem>('StoredItem', {
      key: string,
      value: string,
      revision: i64,
      updated: u64,
      authorUserId: string,
    }),
  ),
});

const lockDetails = seq(struct<LockDetail>('LockDetail', { lockName: string, owner: string, ttl: u32 }));

/** Every successful answer, with its variant index. */
export const response: Codec<Response> = union<Response>('Response', {
  Login: [0, { timestamp: u64, limits: loginLimits, ticket: sessionTicket }],
  Logout: [1, { timestamp: u64 }],
  Subscribe: [2, { channel: string, timestamp: u64 }],
  Unsubscribe: [3, { channel: string, timestamp: u64 }],
  Publish: [4, { channel: string, timestamp: u64 }],
  Pong: [5, { timestamp: u64 }],
  RenewToken: [6, { timestamp: u64 }],
  Resume: [7, { timestamp: u64, limits: loginLimits, nextFrame: u64s }],
  Join: [8, { channel: string, timestamp: u64 }],
  Leave: [9, { channel: string, timestamp: u64 }],
  JoinTopic: [10, { channel: string, topic: string, timestamp: u64 }],
  LeaveTopic: [11, { channel: string, topic: string, timestamp: u64 }],
  PublishTopic: [12, { channel: string, topic: string, timestamp: u64 }],
  SubscribeTopic: [
    13,
    {
      channel: string,
      topic: string,
      succeedUsers: strings,
      failedUsers: seq(struct<FailedUser>('FailedUser', { user: string, errorCode: i32, reason: string })),
      timestamp: u64,
    },
  ],
  UnsubscribeTopic: [14, { channel: string, topic: string, timestamp: u64 }],
  State: [15, { timestamp: u64 }],
  GetState: [16, { userId: string, states: stringMap, timestamp: u64 }],
  WhoNow: [17, { totalOccupancy: u32, occupants: seq(userState), nextPage: string, timestamp: u64 }],
  WhereNow: [
    18,
    {
      channels: seq(struct<ChannelDetail>('ChannelDetail', { channelName: string, channelType })),
      timestamp: u64,
    },
  ],
  MetadataWritten: [19, { totalCount: u32, majorRevision: i64, timestamp: u64 }],
  Metadata: [20, { data: storageData, timestamp: u64 }],
  Done: [21, { timestamp: u64 }],
  Locks: [22, { locks: lockDetails, timestamp: u64 }],
  Messages: [
    23,
    {
      messages: seq(
        struct<HistoryMessage>('HistoryMessage', {
          message: payload,
          customType: string,
          publisher: string,
          timestamp: u64,
        }),
      ),
      newStart: u64,
      timestamp: u64,
    },
  ],
  PublishBatch: [
    24,
    {
      results: seq(
        union<PublishResult>('PublishResult', {
          Ok: [0, { timestamp: u64 }],
          Err: [1, { code: i32, reason: string }],
        }),
      ),
      timestamp: u64,
    },
  ],
});

/** `Result<Response, WireError>`: 0 then the response, or 1 then the error. */
const responseResult: Codec<ResponseResult> = {
  encode: (w, value) => {
    if (typeof value !== 'object' || value === null || typeof value.ok !== 'boolean') {
      throw new CodecError('InvalidValue', 'Response result: expected { ok: boolean, ... }');
    }
    if (value.ok) {
      w.variant(0);
      response.encode(w, value.response);
    } else {
      w.variant(1);
      wireError.encode(w, value.error);
    }
  },
  decode: (r) => {
    const tag = r.variant();
    if (tag === 0) return { ok: true, response: response.decode(r) };
    if (tag === 1) return { ok: false, error: wireError.decode(r) };
    throw new CodecError('UnknownVariant', `Result: unknown variant ${tag}`);
  },
};

const closeReason = names<CloseReason>('CloseReason', {
  SameUidLogin: 0,
  SlowConsumer: 1,
  ServerShutdown: 2,
  TokenExpired: 3,
  Kicked: 4,
});

const messageFields: Fields<MessageEvent> = {
  channelType,
  channelName: string,
  topicName: string,
  message: payload,
  customType: string,
  publisher: string,
  timestamp: u64,
};

const topicFields: Fields<TopicEvent> = {
  eventType: names<TopicEventType>('TopicEventType', { Snapshot: 0, RemoteJoin: 1, RemoteLeave: 2 }),
  channelName: string,
  publisher: string,
  topicInfos: seq(
    struct<TopicInfo>('TopicInfo', {
      topicName: string,
      publishers: seq(struct<PublisherInfo>('PublisherInfo', { userId: string, meta: string })),
    }),
  ),
  timestamp: u64,
};

const presenceFields: Fields<PresenceEvent> = {
  eventType: names<PresenceEventType>('PresenceEventType', {
    Snapshot: 0,
    Interval: 1,
    RemoteJoin: 2,
    RemoteLeave: 3,
    RemoteTimeout: 4,
    RemoteStateChanged: 5,
  }),
  channelType,
  channelName: string,
  publisher: string,
  stateChanged: stringMap,
  interval: option(
    struct('IntervalDetail', { join: strings, leave: strings, timeout: strings, userStateList: seq(userState) }),
  ),
  snapshot: seq(userState),
  timestamp: u64,
};

const storageFields: Fields<StorageEvent> = {
  storageType: names<StorageType>('StorageType', { User: 0, Channel: 1 }),
  eventType: names<StorageEventType>('StorageEventType', { Snapshot: 0, Set: 1, Update: 2, Remove: 3 }),
  channelType,
  channelName: string,
  publisher: string,
  data: storageData,
  timestamp: u64,
};

const lockFields: Fields<LockEvent> = {
  channelType,
  eventType: names<LockEventType>('LockEventType', {
    Snapshot: 0,
    Set: 1,
    Removed: 2,
    Acquired: 3,
    Released: 4,
    Expired: 5,
  }),
  channelName: string,
  lockName: string,
  ttl: u32,
  owner: string,
  publisher: string,
  snapshot: lockDetails,
  timestamp: u64,
};

const lostFields: Fields<LostMessages> = {
  channelType,
  channelName: string,
  from: u64,
  to: u64,
  count: u32,
};

const eventPart = union<EventPart>('EventPart', {
  Presence: [0, presenceFields],
  Topic: [1, topicFields],
});

/** Every event, with its variant index. */
export const event: Codec<Event> = union<Event>('Event', {
  Message: [0, messageFields],
  SessionClosed: [1, { reason: closeReason }],
  TokenPrivilegeWillExpire: [2, { channelName: string }],
  Topic: [3, topicFields],
  ChannelLeft: [4, { channelType, channelName: string, reason: closeReason }],
  Presence: [5, presenceFields],
  Storage: [6, storageFields],
  Lock: [7, lockFields],
  MessagesLost: [8, lostFields],
  Part: [9, { part: eventPart }],
});

/** A server frame body. */
export const serverMsg: Codec<ServerMsg> = union<ServerMsg>('ServerMsg', {
  Welcome: [0, { version: u16, server: string }],
  Response: [1, { id: u32, result: responseResult }],
  Event: [2, { event }],
  Error: [3, { code: i32, reason: string }],
  Lane: [4, { lane: u8 }],
});
