/**
 * The wire description of the client's messages (`docs/protocol.md` §4.2): [`ClientMsg`] and
 * every [`Request`], in the field order and with the variant indexes of `rtm-proto`.
 */

import type {
  ClientMsg,
  GetMessagesRequest,
  JoinOptions,
  JoinTopicOptions,
  LockOp,
  LockRequest,
  LoginRequest,
  MetadataItem,
  MetadataOp,
  MetadataOptions,
  MetadataTarget,
  MetadataWrite,
  PublishBatch,
  PublishRequest,
  PublishTopicRequest,
  Request,
  ResumeRequest,
  SessionTicket,
  SubscribeOptions,
  TopicPriority,
  TopicQos,
} from './model.js';
import {
  bool,
  channelType,
  type Codec,
  type Fields,
  fixed,
  i64,
  names,
  payload,
  seq,
  string,
  stringMap,
  strings,
  struct,
  u16,
  u32,
  u64,
  u64Big,
  u64s,
  union,
} from './schema.js';

/** A session ticket: the id, then the 16-byte secret without a length. */
export const sessionTicket: Codec<SessionTicket> = struct<SessionTicket>('SessionTicket', {
  sessionId: u64Big,
  secret: fixed(16),
});

const loginFields: Fields<LoginRequest> = {
  appId: string,
  userId: string,
  token: string,
  useStringUserId: bool,
  heartbeatInterval: u16,
  presenceTimeout: u16,
};

const resumeFields: Fields<ResumeRequest> = {
  appId: string,
  userId: string,
  ticket: sessionTicket,
  received: u64s,
};

const subscribeOptions = struct<SubscribeOptions>('SubscribeOptions', {
  withMessage: bool,
  withPresence: bool,
  beQuiet: bool,
  withMetadata: bool,
  withLock: bool,
});

const publishFields: Fields<PublishRequest> = {
  channelType,
  channel: string,
  message: payload,
  customType: string,
};

const publishBatchFields: Fields<PublishBatch> = {
  channelType,
  channel: string,
  customType: string,
  store: bool,
  messages: seq(payload),
};

const joinOptions = struct<JoinOptions>('JoinOptions', {
  token: string,
  withPresence: bool,
  beQuiet: bool,
  withMetadata: bool,
  withLock: bool,
});

const joinTopicOptions = struct<JoinTopicOptions>('JoinTopicOptions', {
  meta: string,
  qos: names<TopicQos>('TopicQos', { Ordered: 0, Unordered: 1 }),
  priority: names<TopicPriority>('TopicPriority', { Highest: 0, High: 1, Normal: 2, Low: 3 }),
});

const publishTopicFields: Fields<PublishTopicRequest> = {
  channel: string,
  topic: string,
  message: payload,
  customType: string,
};

const metadataTarget = union<MetadataTarget>('MetadataTarget', {
  Channel: [0, { channelType, channel: string }],
  User: [1, { userId: string }],
});

const metadataWriteFields: Fields<MetadataWrite> = {
  op: names<MetadataOp>('MetadataOp', { Set: 0, Update: 1, Remove: 2 }),
  target: metadataTarget,
  items: seq(struct<MetadataItem>('MetadataItem', { key: string, value: string, revision: i64 })),
  options: struct<MetadataOptions>('MetadataOptions', {
    majorRevision: i64,
    lockName: string,
    addTimestamp: bool,
    addUserId: bool,
  }),
};

const lockOp = union<LockOp>('LockOp', {
  Set: [0, { ttl: u32 }],
  Remove: [1, {}],
  Acquire: [2, { retry: bool }],
  Release: [3, {}],
  Revoke: [4, { owner: string }],
});

const lockFields: Fields<LockRequest> = {
  channelType,
  channel: string,
  lockName: string,
  op: lockOp,
};

const getMessagesFields: Fields<GetMessagesRequest> = {
  channelType,
  channel: string,
  messageCount: u32,
  start: u64,
  end: u64,
};

/** Every request, with its variant index. */
export const request: Codec<Request> = union<Request>('Request', {
  Login: [0, loginFields],
  Logout: [1, {}],
  Subscribe: [2, { channel: string, options: subscribeOptions }],
  Unsubscribe: [3, { channel: string }],
  Publish: [4, publishFields],
  Ping: [5, {}],
  RenewToken: [6, { token: string }],
  Heartbeat: [7, { received: u64s }],
  Resume: [8, resumeFields],
  Join: [9, { channel: string, options: joinOptions }],
  Leave: [10, { channel: string }],
  JoinTopic: [11, { channel: string, topic: string, options: joinTopicOptions }],
  LeaveTopic: [12, { channel: string, topic: string }],
  PublishTopic: [13, publishTopicFields],
  SubscribeTopic: [14, { channel: string, topic: string, users: strings }],
  UnsubscribeTopic: [15, { channel: string, topic: string, users: strings }],
  RenewChannelToken: [16, { channel: string, token: string }],
  SetState: [17, { channelType, channel: string, states: stringMap }],
  GetState: [18, { channelType, channel: string, userId: string }],
  RemoveState: [19, { channelType, channel: string, keys: strings }],
  WhoNow: [20, { channelType, channel: string, includeUserId: bool, includeState: bool, page: string }],
  WhereNow: [21, { userId: string }],
  WriteMetadata: [22, metadataWriteFields],
  GetMetadata: [23, { target: metadataTarget }],
  SubscribeUserMetadata: [24, { userId: string }],
  UnsubscribeUserMetadata: [25, { userId: string }],
  Lock: [26, lockFields],
  GetLocks: [27, { channelType, channel: string }],
  PublishAndStore: [28, publishFields],
  GetMessages: [29, getMessagesFields],
  PublishBatch: [30, publishBatchFields],
});

/** A client frame body. */
export const clientMsg: Codec<ClientMsg> = union<ClientMsg>('ClientMsg', {
  Hello: [0, { version: u16, agent: string }],
  Request: [1, { id: u32, request }],
  Ack: [2, { received: u64s }],
});
