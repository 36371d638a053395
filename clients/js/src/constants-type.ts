// `AgoraRTM.constantsType`: the enums as one namespace, and the string unions as its types.

import * as types from './types.js';

export {
  AreaCode,
  ChannelTypeEnum,
  LegacyAreaCode,
  LinkStateChangeReasonDescription,
  MessageType,
  TokenEventReason,
} from './constants.js';
export type EncryptionMode = types.EncryptionMode;
export type LockEventType = types.LockEventType;
export type PresenceEventType = types.PresenceEventType;
export type StorageEventType = types.StorageEventType;
export type StorageType = types.StorageType;
export type TokenEventType = types.TokenEventType;
export type TopicEventType = types.TopicEventType;
