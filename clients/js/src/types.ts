// The public types of the SDK: the option, response and event objects of the Signaling Web
// API (agora-rtm-sdk 2.x), with the same names and fields, so that an application written
// against that API compiles against this package unchanged (test/dropin checks it).
// Field meanings are in docs/protocol.md; the reference is ../shared/reference.

/** The three kinds of channel. */
export type ChannelType = 'STREAM' | 'MESSAGE' | 'USER';
/** The channel kinds that keep a message history. */
export type HistoryChannelType = Exclude<ChannelType, 'STREAM'>;
/** A service of a private deployment. */
export type ServiceType = 'MESSAGE' | 'STREAM';
/** End-to-end encryption of messages. */
export type EncryptionMode = 'NONE' | 'AES_128_GCM' | 'AES_256_GCM';
/** Whose metadata a storage event is about. */
export type StorageType = 'NONE' | 'USER' | 'CHANNEL';
/** What happened to someone's presence. */
export type PresenceEventType =
  | 'NONE'
  | 'SNAPSHOT'
  | 'INTERVAL'
  | 'REMOTE_JOIN'
  | 'REMOTE_LEAVE'
  | 'REMOTE_TIMEOUT'
  | 'REMOTE_STATE_CHANGED'
  | 'ERROR_OUT_OF_SERVICE';
/** What happened to the topics of a stream channel. */
export type TopicEventType = 'NONE' | 'REMOTE_JOIN' | 'REMOTE_LEAVE' | 'SNAPSHOT';
/** What happened to a metadata set. */
export type StorageEventType = 'NONE' | 'SET' | 'SNAPSHOT' | 'REMOVE' | 'UPDATE';
/** What happened to a lock. */
export type LockEventType = 'NONE' | 'SET' | 'REMOVED' | 'ACQUIRED' | 'RELEASED' | 'SNAPSHOT' | 'EXPIRED';
/** What a token event says. */
export type TokenEventType = 'WILL_EXPIRE' | 'READ_PERMISSION_REVOKED';
/** How a message's payload was given: text or bytes. */
export type MessageKind = 'STRING' | 'BINARY';

/** Every response carries the server's time of the operation, in ms since the Unix epoch. */
export interface BaseResponse {
  timestamp: number;
}

// ---- configuration -----------------------------------------------------------------------

/**
 * Where the server is. rtm reads `accessPointHosts` as a list of URLs, tried in turn:
 * `ws://host:port/rtm` or `wss://host:port/rtm` for WebSocket, `https://host:port` (or
 * `https://host:port/rtm`) for WebTransport.
 */
export interface PrivateConfig {
  serviceType: ServiceType[];
  accessPointHosts: string[];
  eventUploadHosts?: string[];
  logUploadHosts?: string[];
  originDomains?: string[];
  domainMode?: 1 | 2;
  /**
   * rtm's own: SHA-256 hashes (32 bytes, or 64 hex digits) of the server's short-lived
   * certificate, for WebTransport to a server without a CA certificate (`GET
   * /rtm/certificate-hash` on its WebSocket listener gives the current one).
   */
  serverCertificateHashes?: Array<Uint8Array | string>;
}

/** The client's configuration (the reference's `RTMConfig`). */
export interface RTMConfig {
  encryptionMode?: EncryptionMode;
  salt?: Uint8Array;
  cipherKey?: string;
  presenceTimeout?: number;
  logUpload?: boolean;
  cloudProxy?: boolean;
  useStringUserId?: boolean;
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'none';
  heartbeatInterval?: number;
  privateConfig?: PrivateConfig;
  /** rtm's own: the login token (the reference passes it to `login` instead; both work). */
  token?: string;
}

// ---- login, messages, subscriptions ---------------------------------------------------------

export interface LoginOptions {
  token?: string;
}
export interface LoginResponse extends BaseResponse {}
export interface LogoutResponse extends BaseResponse {}
export interface RenewTokenOptions {
  channelName?: string;
}
export interface RenewTokenResponse extends BaseResponse {}
export interface UpdateConfigResponse extends BaseResponse {}

export interface RTMOperationResponse extends BaseResponse {
  channelName: string;
}
export interface SubscribeResponse extends RTMOperationResponse {}
export interface UnsubscribeResponse extends RTMOperationResponse {}
export interface PublishResponse extends RTMOperationResponse {}

export interface PublishOptions {
  customType?: string;
  channelType?: ChannelType;
  storeInHistory?: boolean;
}

export interface SubscribeOptions {
  withMessage?: boolean;
  withPresence?: boolean;
  beQuiet?: boolean;
  withMetadata?: boolean;
  withLock?: boolean;
}

// ---- stream channels ---------------------------------------------------------------------

export interface JoinOptions {
  token?: string;
  withPresence?: boolean;
  beQuiet?: boolean;
  withMetadata?: boolean;
  withLock?: boolean;
}
// The reference spells this one with a small j.
// eslint-disable-next-line @typescript-eslint/naming-convention
export interface joinTopicOptions {
  // The reference types it `any`; rtm sends it as text (at most 256 bytes).
  meta?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** rtm's own: `'ORDERED'` (default) or `'UNORDERED'`. */
  qos?: 'ORDERED' | 'UNORDERED';
  /** rtm's own: `'HIGHEST'`, `'HIGH'`, `'NORMAL'` (default) or `'LOW'`. */
  priority?: 'HIGHEST' | 'HIGH' | 'NORMAL' | 'LOW';
}
export interface PublishTopicMessageOptions {
  customType?: string;
}
export interface SubscribeTopicOptions {
  users?: string[];
}
export interface UnsubscribeTopicOptions {
  users?: string[];
}
export interface StreamChannelOperationResponse extends BaseResponse {
  topicName: string;
}
export interface JoinChannelResponse extends BaseResponse {}
export interface LeaveChannelResponse extends JoinChannelResponse {}
export interface JoinTopicResponse extends StreamChannelOperationResponse {}
export interface LeaveTopicResponse extends JoinTopicResponse {}
export interface PublishTopicMessageResponse extends StreamChannelOperationResponse {}
/** Why one user of a topic subscription failed. */
export interface SubscribedFailedReason extends StreamChannelOperationResponse {
  user: string;
  errorCode?: number;
  reason?: string;
}
export interface SubscribeTopicResponse extends StreamChannelOperationResponse {
  succeedUsers: string[];
  failedUsers: string[];
  failedDetails: SubscribedFailedReason[];
}
export interface UnsubscribeTopicResponse extends BaseResponse {}
export interface GetSubscribedUserListResponse extends StreamChannelOperationResponse {
  subscribed: string[];
}

// ---- presence ----------------------------------------------------------------------------

/** A user's temporary state in a channel: string keys and values. */
export interface StateDetail {
  [key: string]: string;
}
export interface OccupancyDetail {
  states: StateDetail;
  userId: string;
  statesCount: number;
}
export interface WhoNowOptions {
  includedUserId?: boolean;
  includedState?: boolean;
  page?: string;
}
export interface GetOnlineUsersOptions extends WhoNowOptions {}
export interface WhoNowResponse extends BaseResponse {
  totalOccupancy: number;
  occupants: OccupancyDetail[];
  nextPage: string;
}
export interface GetOnlineUsersResponse extends WhoNowResponse {}
export interface ChannelDetail {
  channelName: string;
  channelType: ChannelType;
}
export interface WhereNowResponse extends BaseResponse {
  channels: ChannelDetail[];
  totalChannel: number;
}
export interface GetUserChannelsResponse extends WhereNowResponse {}
export interface SetStateResponse extends BaseResponse {}
export interface GetStateResponse extends OccupancyDetail, BaseResponse {}
export interface RemoveStateOptions {
  states?: string[];
}
export interface RemoveStateResponse extends BaseResponse {}

// ---- storage -----------------------------------------------------------------------------

export interface MetadataItem {
  key: string;
  value: string;
  revision?: number;
}
export interface MetaDataDetail {
  value: string;
  revision: number;
  updated: number;
  authorUid: string;
}
export interface StorageData {
  totalCount: number;
  majorRevision: number;
  metadata: Record<string, MetaDataDetail>;
}
export interface MetadataOptions {
  majorRevision?: number;
  lockName?: string;
  addTimeStamp?: boolean;
  addUserId?: boolean;
}
export interface RemoveChannelMetadataOptions extends MetadataOptions {
  data?: MetadataItem[];
}
export interface SetOrUpdateUserMetadataOptions extends MetadataOptions {
  userId?: string;
}
export interface RemoveUserMetadataOptions extends MetadataOptions {
  userId?: string;
  data?: MetadataItem[];
}
export interface GetUserMetadataOptions {
  userId?: string;
}
export interface ChannelMetadataOperationResponse extends BaseResponse {
  channelName: string;
  channelType: ChannelType;
}
export interface UserMetadataOperationResponse extends BaseResponse {
  userId: string;
}
export interface SetChannelMetadataResponse extends ChannelMetadataOperationResponse {
  totalCount: number;
}
export interface UpdateChannelMetadataResponse extends ChannelMetadataOperationResponse {
  totalCount: number;
}
export interface RemoveChannelMetadataResponse extends ChannelMetadataOperationResponse {
  totalCount: number;
}
export interface SetUserMetadataResponse extends UserMetadataOperationResponse {
  totalCount: number;
}
export interface UpdateUserMetadataResponse extends UserMetadataOperationResponse {
  totalCount: number;
}
export interface RemoveUserMetadataResponse extends UserMetadataOperationResponse {
  totalCount: number;
}
export interface GetChannelMetadataResponse extends StorageData, ChannelMetadataOperationResponse {}
export interface GetUserMetadataResponse extends StorageData, UserMetadataOperationResponse {}
export interface SubscribeUserMetaResponse extends UserMetadataOperationResponse {}
export interface UnsubscribeUserMetaResponse extends UserMetadataOperationResponse {}

// ---- locks -------------------------------------------------------------------------------

export interface LockDetail {
  lockName: string;
  owner: string;
  ttl: number;
}
export interface SetLockOptions {
  ttl?: number;
}
export interface AcquireLockOptions {
  retry?: boolean;
}
export interface LockOperationResponse extends BaseResponse {
  channelName: string;
  channelType: ChannelType;
  lockName: string;
}
export interface SetLockResponse extends LockOperationResponse {}
export interface RemoveLockResponse extends LockOperationResponse {}
export interface AcquireLockResponse extends LockOperationResponse {}
export interface ReleaseLockResponse extends LockOperationResponse {}
export interface RevokeLockResponse extends LockOperationResponse {}
export interface GetLockResponse extends BaseResponse {
  totalLocks: number;
  lockDetails: LockDetail[];
  channelName: string;
  channelType: ChannelType;
}

// ---- history -----------------------------------------------------------------------------

export interface GetHistoryMessageOptions {
  messageCount?: number;
  start?: number;
  end?: number;
}
export interface HistoryMessage {
  message: string | Uint8Array;
  messageType: MessageKind;
  customType: string;
  publisher: string;
  timestamp: number;
}
export interface GetMessagesResponse extends BaseResponse {
  messageList: HistoryMessage[];
  count: number;
  newStart: number;
}

// ---- errors ------------------------------------------------------------------------------

/** What a failed call rejects with (an `RTMBaseError` carries these fields). */
export interface ErrorInfo {
  error: boolean;
  reason: string;
  operation: string;
  errorCode: number;
}
/** Extra details of an error. */
export interface IErrorInfo {
  code?: number;
  serverCode?: number;
  originalError?: unknown;
}
