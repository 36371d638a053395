// The reference's constants (`AgoraRTM.constantsType`): enums an application may compare with.

/* eslint-disable @typescript-eslint/no-namespace */

export enum MessageType {
  STRING = 'STRING',
  BINARY = 'BINARY',
}

export enum AreaCode {
  GLOBAL = 'GLOBAL',
  INDIA = 'INDIA',
  JAPAN = 'JAPAN',
  ASIA = 'ASIA',
  EUROPE = 'EUROPE',
  CHINA = 'CHINA',
  NORTH_AMERICA = 'NORTH_AMERICA',
}

export enum LegacyAreaCode {
  CN = 'CN',
  NA = 'NA',
  EU = 'EU',
  AS = 'AS',
  JP = 'JP',
  IN = 'IN',
  GLOB = 'GLOB',
  OC = 'OC',
  SA = 'SA',
  AF = 'AF',
  KR = 'KR',
  US = 'US',
  OVS = 'OVS',
}

/** The channel types' numbers (the wire uses them too). */
export enum ChannelTypeEnum {
  MESSAGE = 1,
  STREAM = 2,
  USER = 3,
}

export enum TokenEventReason {
  WILL_EXPIRE = 'The token is about to expire',
  READ_PERMISSION_REVOKED = 'The token read permission is revoked',
}

/** Readable texts of the link-state reason codes. */
export enum LinkStateChangeReasonDescription {
  UNKNOWN = 'Unknown',
  LOGIN = 'Perform login operation',
  LOGIN_SUCCESS = 'Login success',
  LOGIN_TIMEOUT = 'Login timeout',
  LOGIN_NOT_AUTHORIZED = 'Login not authorized',
  LOGIN_REJECTED = 'Login rejected',
  RELOGIN = 'Perform login operation again',
  LOGOUT = 'Logout success',
  AUTO_RECONNECT = 'Reconnecting',
  RECONNECT_TIMEOUT = 'Reconnect timeout',
  RECONNECT_SUCCESS = 'Reconnect success',
  JOIN = 'Perform join operation',
  JOIN_SUCCESS = 'Join channel success',
  JOIN_FAILED = 'Join channel failed',
  REJOIN = 'Perform join operation again',
  LEAVE = 'Leave channel success',
  INVALID_TOKEN = 'Invalid token',
  TOKEN_EXPIRED = 'Token expired',
  INCONSISTENT_APP_ID = 'Inconsistent app ID',
  INVALID_CHANNEL_NAME = 'Invalid channel name',
  INVALID_USER_ID = 'Invalid user id',
  NOT_INITIALIZED = 'Not initialized',
  RTM_SERVICE_NOT_CONNECTED = 'RTM service not connected',
  CHANNEL_INSTANCE_EXCEED_LIMITATION = 'Channel instance exceed limitation',
  OPERATION_RATE_EXCEED_LIMITATION = 'Operation rate exceed limitation',
  CHANNEL_IN_ERROR_STATE = 'Channel in error state',
  PRESENCE_NOT_CONNECTED = 'Presence not connected',
  SAME_UID_LOGIN = 'The same uid login on another device',
  KICKED_OUT_BY_SERVER = 'Kicked out by server',
  KEEP_ALIVE_TIMEOUT = 'Keep alive timeout',
  CONNECTION_ERROR = 'Connection error',
  PRESENCE_NOT_READY = 'Presence not ready',
  NETWORK_CHANGE = 'Network change',
  SERVICE_NOT_SUPPORTED = 'Service not supported',
  STREAM_CHANNEL_NOT_AVAILABLE = 'Stream channel not available',
  STORAGE_NOT_AVAILABLE = 'Storage service is not available',
  LOCK_NOT_AVAILABLE = 'Lock service is not available',
  LOGIN_TOO_FREQUENT = 'Login operation is too frequent',
}

/** Codes of a failed topic subscription. */
export namespace RTMStreamChannelStatusCode {
  export enum SubscribeTopicErrorCode {
    NO_ERROR = 0,
    PARTIALLY_SUCCESSFUL = 1,
    ALL_FAILED = 2,
    UNKNOWN_ERROR = 3,
    INVALID_PARAMS = 4,
    REMOTE_USER_IS_NOT_PUBLISHED = 5,
    INVALID_REMOTE_USER = 6,
    TIMEOUT = 7,
    ALREADY_SUBSCRIBED_USER = 20001,
    SUB_USER_EXCEED_LIMITATION = 20003,
    NOT_SUBSCRIBED_USER = 20004,
  }
}
