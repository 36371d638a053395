// A logged-in session across connections: the session cache (what the reference calls it: the
// channels, topics, states and user-metadata subscriptions to restore), and the supervisor
// that resumes the session, or logs in again, after a lost connection (docs/protocol.md §5.6).

import type * as wire from './codec/model.js';
import { Connection, type ConnectionOptions, type Ended, Lanes } from './connection.js';
import { RTMBaseError } from './errors.js';
import type { RTMEvents } from './events.js';
import { afterFailure, FIRST_RETRY_MS, jittered } from './reconnect.js';
import { canOpen } from './transport.js';

/** A joined stream channel, as the cache keeps it. */
export interface StreamCache {
  options: wire.JoinOptions;
  topics: Map<string, wire.JoinTopicOptions>;
  subscriptions: Map<string, Set<string>>;
}

/** What the session must restore after a new login. */
export class SessionCache {
  token: string;
  readonly subscriptions = new Map<string, wire.SubscribeOptions>();
  readonly streams = new Map<string, StreamCache>();
  /** This user's state per `channelType:channel`. */
  readonly states = new Map<string, { channelType: wire.ChannelType; channel: string; states: wire.StateDetail }>();
  readonly userMetadata = new Set<string>();

  constructor(token: string) {
    this.token = token;
  }

  /** The channels subscribed and joined. */
  channels(): string[] {
    return [...this.subscriptions.keys(), ...this.streams.keys()];
  }

  /** Whether the session is in a channel. */
  isIn(channelType: wire.ChannelType, channel: string): boolean {
    return channelType === 2 ? this.streams.has(channel) : this.subscriptions.has(channel);
  }

  /** The requests that restore everything in a new session, each with the name it restores. */
  restoreRequests(): Array<[string, wire.Request]> {
    const out: Array<[string, wire.Request]> = [];
    for (const [channel, options] of this.subscriptions) out.push([channel, { kind: 'Subscribe', channel, options }]);
    for (const [channel, s] of this.streams) {
      out.push([channel, { kind: 'Join', channel, options: s.options }]);
      for (const [topic, options] of s.topics) out.push([channel, { kind: 'JoinTopic', channel, topic, options }]);
      for (const [topic, users] of s.subscriptions) out.push([channel, { kind: 'SubscribeTopic', channel, topic, users: [...users] }]);
    }
    for (const { channelType, channel, states } of this.states.values()) {
      if (this.isIn(channelType, channel) && Object.keys(states).length) out.push([channel, { kind: 'SetState', channelType, channel, states }]);
    }
    for (const userId of this.userMetadata) out.push([userId, { kind: 'SubscribeUserMetadata', userId }]);
    return out;
  }
}

/** A link-state change to report. */
export type LinkChange = Omit<RTMEvents.LinkStateEvent, 'previousState' | 'timestamp' | 'serviceType'>;

/** What the session needs from the client that owns it. */
export interface SessionHost {
  appId: string;
  userId: string;
  urls: string[];
  certificateHashes: Uint8Array[];
  heartbeatSec: number;
  requestTimeoutMs: number;
  loginRequest(token: string): wire.Request;
  onEvent(lane: number, event: wire.Event, session: Session): Promise<void> | void;
  /** An event frame of `lane` could not be read. */
  onUnreadable(lane: number, why: string): void;
  /** A resume says frames of `lane` were lost. */
  onGap(lane: number): void;
  setLink(change: LinkChange): void;
  /** The session ended for good (refused, or the server ended it). */
  ended(session: Session): void;
}

/** Opens a connection to the first of `urls` that answers; a refusal ends the search. */
export async function connectFirst(
  host: SessionHost,
  lanes: Lanes,
  first: wire.Request,
  operation: string,
  onEvent: ConnectionOptions['onEvent'],
  onEnded: ConnectionOptions['onEnded'],
): Promise<{ connection: Connection; response: wire.Response }> {
  const failures: string[] = [];
  for (const url of host.urls) {
    if (!canOpen(url)) {
      failures.push(`${url}: not available on this platform`);
      continue;
    }
    try {
      return await Connection.open(
        {
          url,
          certificateHashes: host.certificateHashes,
          openTimeoutMs: host.requestTimeoutMs,
          requestTimeoutMs: host.requestTimeoutMs,
          heartbeatSec: host.heartbeatSec,
          agent: 'rtm-sdk (JavaScript)',
          lanes,
          onEvent,
          onEnded,
          onUnreadable: (lane, why) => host.onUnreadable(lane, why),
          onGap: (lane) => host.onGap(lane),
        },
        first,
        operation,
      );
    } catch (e) {
      if (e instanceof RTMBaseError) throw e;
      failures.push(`${url}: ${(e as Error).message}`);
    }
  }
  throw new Error(failures.length ? failures.join('; ') : 'no access point to try');
}

/** One login's session: its connection of the moment, its cache and its ticket. */
export class Session {
  readonly host: SessionHost;
  readonly cache: SessionCache;
  connection: Connection | null = null;
  #ticket: wire.SessionTicket;
  #lanes: Lanes;
  #stopped = false;
  #retry: ReturnType<typeof setTimeout> | null = null;

  constructor(host: SessionHost, token: string, ticket: wire.SessionTicket, lanes: Lanes) {
    this.host = host;
    this.cache = new SessionCache(token);
    this.#ticket = ticket;
    this.#lanes = lanes;
  }

  /** Whether the connection is up. */
  get connected(): boolean {
    return this.connection !== null;
  }

  /** The event handler of this session's connections. */
  eventHandler(): ConnectionOptions['onEvent'] {
    return (lane, event) => this.host.onEvent(lane, event, this);
  }

  /** The end handler of a connection of this session. */
  endHandler(): (ended: Ended) => void {
    return (ended) => this.#lost(ended);
  }

  /** Stops the supervisor (logout, or a new login). */
  stop(): void {
    this.#stopped = true;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
  }

  /** Resolves once every event received so far is handled. */
  settled(): Promise<void> {
    return this.#lanes.settled();
  }

  #lost(ended: Ended): void {
    if (this.#stopped) return;
    this.connection = null;
    if (ended.kind === 'rejected') {
      this.stop();
      const reasonCode: RTMEvents.LinkStateChangeReasonCode =
        ended.reason === 'SameUidLogin' ? 'SAME_UID_LOGIN' : ended.reason === 'TokenExpired' ? 'TOKEN_EXPIRED' : 'KICKED_OUT_BY_SERVER';
      this.host.setLink(change('FAILED', 'SERVER_REJECT', reasonCode, `${ended.reason}: ${ended.text}`, this.cache.channels()));
      this.host.ended(this);
      return;
    }
    const heartbeat = ended.kind === 'lost' && ended.heartbeat;
    const shutdown = ended.kind === 'lost' && ended.shutdown === true;
    const text = ended.kind === 'lost' ? ended.text : 'the server closed the connection';
    const operation = heartbeat ? 'HEARTBEAT_TIMEOUT' : shutdown ? 'SERVER_REJECT' : 'SERVER_TIMEOUT';
    this.host.setLink(change('DISCONNECTED', operation, heartbeat ? 'KEEP_ALIVE_TIMEOUT' : 'CONNECTION_ERROR', text, this.cache.channels()));
    this.#schedule(Date.now(), FIRST_RETRY_MS);
  }

  #schedule(lostAt: number, delayMs: number): void {
    if (this.#stopped) return;
    this.#retry = setTimeout(() => {
      this.#retry = null;
      void this.#attempt(lostAt, delayMs);
    }, jittered(delayMs, Math.random()));
  }

  async #attempt(lostAt: number, delayMs: number): Promise<void> {
    if (this.#stopped) return;
    const host = this.host;
    host.setLink(change('CONNECTING', 'AUTO_RECONNECT', 'AUTO_RECONNECT', 'Auto reconnect', this.cache.channels()));
    const resume: wire.Request = {
      kind: 'Resume',
      appId: host.appId,
      userId: host.userId,
      ticket: this.#ticket,
      received: this.#lanes.received.slice(),
    };
    try {
      const { connection } = await connectFirst(host, this.#lanes, resume, 'resume', this.eventHandler(), this.endHandler());
      if (this.#stopped) return connection.close(0, 'logged out');
      this.connection = connection;
      host.setLink({ ...change('CONNECTED', 'RECONNECTED', 'RECONNECT_SUCCESS', 'Reconnect success', this.cache.channels()), isResumed: true });
      connection.start();
      return;
    } catch (e) {
      if (this.#stopped) return;
      if (!(e instanceof RTMBaseError)) return this.#unreachable(lostAt, delayMs, (e as Error).message);
    }
    // The server no longer has the session: log in again and restore the cache.
    await this.#relogin(lostAt, delayMs);
  }

  async #relogin(lostAt: number, delayMs: number): Promise<void> {
    const host = this.host;
    const lanes = new Lanes();
    let opened;
    try {
      opened = await connectFirst(host, lanes, host.loginRequest(this.cache.token), 'login', this.eventHandler(), this.endHandler());
    } catch (e) {
      if (this.#stopped) return;
      if (!(e instanceof RTMBaseError)) return this.#unreachable(lostAt, delayMs, (e as Error).message);
      this.stop();
      host.setLink(change('FAILED', 'SERVER_REJECT', e.errorCode === -10009 ? 'TOKEN_EXPIRED' : 'LOGIN_REJECTED', e.reason, this.cache.channels()));
      host.ended(this);
      return;
    }
    const { connection, response } = opened;
    if (this.#stopped) return connection.close(0, 'logged out');
    const answers = this.cache.restoreRequests().map(([name, request]) =>
      connection.request(request, 'restore').then(
        () => null,
        () => name,
      ),
    );
    const unrestored = [...new Set((await Promise.all(answers)).filter((n): n is string => n !== null))];
    if (this.#stopped) return connection.close(0, 'logged out');
    // Lost while restoring: its end was reported and the next attempt is scheduled. The ticket
    // and counts stay the old session's, so that attempt finds it gone and logs in again
    // (resuming the half-restored new one would report a session without its channels).
    if (connection.ended) return;
    if (response.kind === 'Login') this.#ticket = response.ticket;
    this.#lanes = lanes;
    this.connection = connection;
    host.setLink({
      ...change('CONNECTED', 'RECONNECTED', 'RECONNECT_SUCCESS', 'Reconnect success: logged in again, the previous session had ended', this.cache.channels()),
      unrestoredChannels: unrestored,
    });
    connection.start();
  }

  #unreachable(lostAt: number, delayMs: number, text: string): void {
    const { state, nextDelayMs } = afterFailure(Date.now() - lostAt, delayMs);
    this.host.setLink(change(state, 'AUTO_RECONNECT', 'RECONNECT_TIMEOUT', text, this.cache.channels()));
    this.#schedule(lostAt, nextDelayMs);
  }
}

/** A link change with no unrestored channels and no resume. */
export function change(
  currentState: RTMEvents.LinkState,
  operation: RTMEvents.LinkOperation,
  reasonCode: RTMEvents.LinkStateChangeReasonCode,
  reason: string,
  affectedChannels: string[] = [],
): LinkChange {
  return { currentState, operation, reasonCode, reason, affectedChannels, unrestoredChannels: [], isResumed: false };
}
