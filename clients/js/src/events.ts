// The events the client emits (the reference's `RTMEvents` namespace), and the small emitter
// behind `addEventListener`.

import type {
  ChannelType,
  LockDetail,
  LockEventType,
  MessageKind,
  PresenceEventType,
  ServiceType,
  StateDetail,
  StorageData,
  StorageEventType,
  StorageType,
  TokenEventType,
  TopicEventType,
} from './types.js';

// The reference's names, some in lower case, kept as they are.
/* eslint-disable @typescript-eslint/no-namespace, @typescript-eslint/naming-convention */
export namespace RTMEvents {
  export type BaseEvent = { timestamp: number };
  export interface PublishInfo {
    publisherUserId: string;
    publisherMeta: string;
  }
  export interface topicDetail {
    topicName: string;
    publishers: PublishInfo[];
    totalPublisher: number;
  }
  export interface UserState {
    userId: string;
    states: StateDetail;
    statesCount: number;
  }
  export interface UserList {
    users: string[];
    userCount: number;
  }
  export interface IntervalDetail {
    join: UserList;
    leave: UserList;
    timeout: UserList;
    userStateList: UserState[];
    totalOccupancy: number;
  }
  export interface PresenceEvent extends BaseEvent {
    eventType: PresenceEventType;
    channelType: ChannelType;
    channelName: string;
    publisher: string;
    stateChanged: StateDetail;
    interval: IntervalDetail | null;
    snapshot: UserState[] | null;
  }
  export interface MessageEvent extends BaseEvent {
    channelType: ChannelType;
    channelName: string;
    topicName: string;
    messageType: MessageKind;
    customType: string;
    message: string | Uint8Array;
    publisher: string;
    publishTime?: number;
  }
  export interface StorageEvent extends BaseEvent {
    channelType: ChannelType;
    channelName: string;
    publisher: string;
    storageType: StorageType;
    eventType: StorageEventType;
    data: StorageData;
  }
  export interface LockEvent extends BaseEvent {
    channelType: ChannelType;
    channelName: string;
    eventType: LockEventType;
    lockName: string;
    ttl: number;
    publisher: string;
    snapshot: LockDetail[];
    owner: string;
  }
  export interface TopicEvent extends BaseEvent {
    eventType: TopicEventType;
    channelName: string;
    publisher: string;
    topicInfos: topicDetail[];
    totalTopics: number;
  }
  export type LinkOperation =
    | 'LOGIN'
    | 'LOGOUT'
    | 'JOIN'
    | 'LEAVE'
    | 'SERVER_REJECT'
    | 'AUTO_RECONNECT'
    | 'RECONNECTED'
    | 'HEARTBEAT_TIMEOUT'
    | 'SERVER_TIMEOUT'
    | 'NETWORK_CHANGE';
  export type LinkState = 'IDLE' | 'CONNECTING' | 'CONNECTED' | 'DISCONNECTED' | 'SUSPENDED' | 'FAILED';
  export type LinkStateChangeReasonCode =
    | 'UNKNOWN'
    | 'LOGIN'
    | 'LOGIN_SUCCESS'
    | 'LOGIN_TIMEOUT'
    | 'LOGIN_NOT_AUTHORIZED'
    | 'LOGIN_REJECTED'
    | 'RELOGIN'
    | 'LOGOUT'
    | 'AUTO_RECONNECT'
    | 'RECONNECT_TIMEOUT'
    | 'RECONNECT_SUCCESS'
    | 'JOIN'
    | 'JOIN_SUCCESS'
    | 'JOIN_FAILED'
    | 'REJOIN'
    | 'LEAVE'
    | 'INVALID_TOKEN'
    | 'TOKEN_EXPIRED'
    | 'INCONSISTENT_APP_ID'
    | 'INVALID_CHANNEL_NAME'
    | 'INVALID_USER_ID'
    | 'NOT_INITIALIZED'
    | 'RTM_SERVICE_NOT_CONNECTED'
    | 'CHANNEL_INSTANCE_EXCEED_LIMITATION'
    | 'OPERATION_RATE_EXCEED_LIMITATION'
    | 'CHANNEL_IN_ERROR_STATE'
    | 'PRESENCE_NOT_CONNECTED'
    | 'SAME_UID_LOGIN'
    | 'KICKED_OUT_BY_SERVER'
    | 'KEEP_ALIVE_TIMEOUT'
    | 'CONNECTION_ERROR'
    | 'PRESENCE_NOT_READY'
    | 'NETWORK_CHANGE'
    | 'SERVICE_NOT_SUPPORTED'
    | 'STREAM_CHANNEL_NOT_AVAILABLE'
    | 'STORAGE_NOT_AVAILABLE'
    | 'LOCK_NOT_AVAILABLE'
    | 'LOGIN_TOO_FREQUENT';
  export interface LinkStateEvent extends BaseEvent {
    currentState: LinkState;
    previousState: LinkState;
    serviceType: ServiceType;
    operation: LinkOperation;
    reason: string;
    reasonCode: LinkStateChangeReasonCode;
    affectedChannels: string[];
    unrestoredChannels: string[];
    isResumed: boolean;
  }
  export interface TokenEvent extends BaseEvent {
    eventType: TokenEventType;
    reason: string;
    affectedResources: { messageChannels: string[] };
  }
  /**
   * rtm's own: messages of a channel that were missed during a resume and that the history
   * could not give back (docs/protocol.md §5.12.1). `from`/`to` are the timestamps of the first
   * and last missed message, `count` how many are still missing.
   */
  export interface MessagesLostEvent extends BaseEvent {
    channelType: ChannelType;
    channelName: string;
    from: number;
    to: number;
    count: number;
  }
  /** rtm's own: something the client could not hand over (a damaged frame, a cut snapshot). */
  export interface ErrorEvent extends BaseEvent {
    errorCode: number;
    reason: string;
    channelName: string;
  }
  export interface RTMClientEventMap {
    presence: (presenceData: PresenceEvent) => void;
    message: (message: MessageEvent) => void;
    storage: (storageData: StorageEvent) => void;
    lock: (lockInfo: LockEvent) => void;
    topic: (topicEvent: TopicEvent) => void;
    tokenPrivilegeWillExpire: (channelName: string) => void;
    linkState: (linkState: LinkStateEvent) => void;
    token: (tokenEvent: TokenEvent) => void;
    messagesLost: (lost: MessagesLostEvent) => void;
    error: (error: ErrorEvent) => void;
  }
}
/* eslint-enable @typescript-eslint/no-namespace, @typescript-eslint/naming-convention */

type Listener = (...args: never[]) => void;

/**
 * A minimal typed emitter: listeners run in the order they were added; one that throws does
 * not stop the others (the error is reported on the console, as a DOM event target would).
 */
export class Emitter<Map extends { [K in keyof Map]: Listener }> {
  #listeners = new Map<keyof Map, Set<Listener>>();

  /** Adds `listener` for `name` (adding the same function twice keeps one). */
  on<K extends keyof Map>(name: K, listener: Map[K]): void {
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener);
  }

  /** Removes `listener` for `name`, if it was there. */
  off<K extends keyof Map>(name: K, listener: Map[K]): void {
    this.#listeners.get(name)?.delete(listener);
  }

  /** Whether anything listens to `name`. */
  has(name: keyof Map): boolean {
    return (this.#listeners.get(name)?.size ?? 0) > 0;
  }

  /** Calls every listener of `name` with `args`. */
  emit<K extends keyof Map>(name: K, ...args: Parameters<Map[K]>): void {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (...a: Parameters<Map[K]>) => void)(...args);
      } catch (e) {
        console.error(`rtm: a "${String(name)}" listener threw`, e);
      }
    }
  }
}
