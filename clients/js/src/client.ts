// The client: `new RTM(appId, userId, rtmConfig)`, login and logout, message channels, user
// messages, and the events of the reference (docs/protocol.md §5; ../shared/API.md).

import type * as wire from './codec/model.js';
import { Lanes } from './connection.js';
import { checkEncryption, Cipher } from './crypto.js';
import { Code, rtmError, RTMBaseError } from './errors.js';
import { Emitter, type RTMEvents } from './events.js';
import { History } from './history.js';
import { Lock } from './lock.js';
import {
  channelTypeName,
  channelTypeNumber,
  joinParts,
  lockEvent,
  messageEvent,
  presenceEvent,
  storageEvent,
  toPayload,
  topicEvent,
} from './mapping.js';
import { Presence } from './presence.js';
import { clampSeconds } from './reconnect.js';
import { change, connectFirst, type LinkChange, Session, type SessionHost } from './session.js';
import { Storage } from './storage.js';
import { StreamChannel } from './stream-channel.js';
import type {
  LoginOptions,
  LoginResponse,
  LogoutResponse,
  PublishOptions,
  PublishResponse,
  RenewTokenOptions,
  RenewTokenResponse,
  RTMConfig,
  SubscribeOptions,
  SubscribeResponse,
  UnsubscribeResponse,
} from './types.js';

/** The version of this package. */
export const VERSION = '0.1.0';

/** Requests give up after this long without an answer. */
const REQUEST_TIMEOUT_MS = 10_000;
/** The user-id characters of docs/protocol.md §6. */
const NAME_CHARS = /^[a-zA-Z0-9 !#$%&()+\-:;<=.>?@[\]^_{}|~,]{1,64}$/;

type EventMap = RTMEvents.RTMClientEventMap;

/** Checks a user id or channel name (docs/protocol.md §6). */
export function validName(name: unknown): name is string {
  return typeof name === 'string' && NAME_CHARS.test(name) && name !== 'null';
}

/** Parses certificate hashes given as bytes or hex. */
function hashes(list: Array<Uint8Array | string> | undefined): Uint8Array[] {
  return (list ?? []).map((h) => {
    if (h instanceof Uint8Array) return h;
    const hex = String(h).replace(/[^0-9a-fA-F]/g, '');
    if (hex.length !== 64) throw rtmError('new', Code.INVALID_PRIVATE_CONFIG, `a certificate hash must be 32 bytes (64 hex digits): ${String(h)}`);
    return Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16)));
  });
}

/**
 * A Signaling client. Making one checks the configuration and connects nothing; `login`
 * connects to the first of `rtmConfig.privateConfig.accessPointHosts` that answers.
 */
export class RTMClient {
  /** Presence: who is in a channel, where a user is, temporary states. */
  readonly presence: Presence;
  /** Channel and user metadata. */
  readonly storage: Storage;
  /** Locks of channels. */
  readonly lock: Lock;
  /** The message history. */
  readonly history: History;

  readonly #appId: string;
  readonly #userId: string;
  readonly #config: RTMConfig;
  readonly #cipher: Cipher | null;
  readonly #heartbeatSec: number;
  readonly #presenceTimeoutSec: number;
  readonly #events = new Emitter<EventMap>();
  #state: RTMEvents.LinkState = 'IDLE';
  #session: Session | null = null;
  /** A session the server ended, whose events received before its end are still handed on. */
  #ended: Session | null = null;
  /** Whether a `login` is under way. */
  #loggingIn = false;
  /** Bumped by every `login` and `logout`: a login whose number is no longer current was canceled. */
  #epoch = 0;
  /** Settles when the last `login` has (its canceled connection closed before the next one). */
  #inflight: Promise<void> = Promise.resolve();
  /**
   * Lanes that lost frames (a resume that could not resend them, a frame that could not be
   * read) while a snapshot was being joined there, or before: `true` once parts were dropped.
   */
  readonly #broken = new Map<number, boolean>();
  /** Resolves when every request called so far has been sent (see `call`). */
  #sending: Promise<void> = Promise.resolve();
  /** Leading parts of snapshots per lane (docs/protocol.md §2.2). */
  readonly #parts = new Map<number, wire.EventPart[]>();

  constructor(appId: string, userId: string, rtmConfig?: RTMConfig) {
    if (typeof appId !== 'string' || !/^[A-Za-z0-9]{1,64}$/.test(appId)) {
      throw rtmError('new', Code.INVALID_APP_ID, 'the App ID must be 1 to 64 ASCII letters and digits');
    }
    const config = rtmConfig ?? {};
    if (!validName(userId) || (config.useStringUserId === false && !/^[0-9]+$/.test(userId))) {
      throw rtmError('new', Code.INVALID_USER_ID, `invalid user id ${JSON.stringify(userId)}`);
    }
    checkEncryption(config.encryptionMode, config.cipherKey, config.salt);
    hashes(config.privateConfig?.serverCertificateHashes);
    this.#appId = appId;
    this.#userId = userId;
    this.#config = config;
    this.#cipher = Cipher.from(config.encryptionMode, config.cipherKey, config.salt);
    this.#heartbeatSec = clampSeconds(config.heartbeatInterval, 5, 1800, 5);
    this.#presenceTimeoutSec = clampSeconds(config.presenceTimeout, 5, 300, 300);
    this.presence = new Presence(this);
    this.storage = new Storage(this);
    this.lock = new Lock(this);
    this.history = new History(this);
  }

  /** This client's user id. */
  get userId(): string {
    return this.#userId;
  }

  /** The cipher of end-to-end encryption, or null. */
  get cipher(): Cipher | null {
    return this.#cipher;
  }

  /**
   * rtm's own: how the client reaches the server now, `'websocket'` or `'webtransport'`; null
   * while it has no connection.
   */
  get transport(): 'websocket' | 'webtransport' | null {
    return this.#session?.connection?.link.kind ?? null;
  }

  /** The session of the moment (internal). */
  get session(): Session | null {
    return this.#session;
  }

  addEventListener<K extends keyof EventMap>(eventName: K, listener: EventMap[K]): void {
    this.#events.on(eventName, listener);
  }

  removeEventListener<K extends keyof EventMap>(eventName: K, listener: EventMap[K]): void {
    this.#events.off(eventName, listener);
  }

  /** Logs in: connects, and starts a session kept across lost connections until `logout`. */
  async login(options?: LoginOptions): Promise<LoginResponse> {
    if (this.#session || this.#loggingIn) throw rtmError('login', Code.DUPLICATE_OPERATION, 'already logged in (or logging in)');
    const urls = this.#config.privateConfig?.accessPointHosts ?? [];
    if (!urls.length) {
      throw rtmError('login', Code.INVALID_PRIVATE_CONFIG, 'rtm needs the server address: rtmConfig.privateConfig.accessPointHosts, e.g. ["wss://host:4434/rtm"]');
    }
    const token = options?.token ?? this.#config.token ?? '';
    this.#loggingIn = true;
    const attempt = ++this.#epoch;
    // A login canceled by `logout` may still be connecting: its Login must reach the server
    // (and be closed) before this one's, or it would replace this session there.
    const previous = this.#inflight;
    let settle = () => undefined as void;
    this.#inflight = new Promise<void>((resolve) => (settle = resolve));
    this.#setLink(change('CONNECTING', 'LOGIN', 'LOGIN', 'Perform login operation'));
    const host = this.#host();
    const lanes = new Lanes();
    let session: Session | null = null;
    try {
      await previous;
      if (attempt !== this.#epoch) throw rtmError('login', Code.LOGIN_CANCELED, 'logout was called while logging in');
      const { connection, response } = await connectFirst(
        host,
        lanes,
        host.loginRequest(token),
        'login',
        (lane, event) => (session ? host.onEvent(lane, event, session) : undefined),
        (ended) => session?.endHandler()(ended),
      );
      if (attempt !== this.#epoch) {
        connection.close(0, 'login canceled');
        throw rtmError('login', Code.LOGIN_CANCELED, 'logout was called while logging in');
      }
      if (response.kind !== 'Login') throw rtmError('login', Code.LOGIN_REJECTED, 'the server answered the login with something else');
      session = new Session(host, token, response.ticket, lanes);
      session.connection = connection;
      this.#session = session;
      this.#ended = null;
      this.#loggingIn = false;
      this.#parts.clear();
      this.#broken.clear();
      this.#setLink(change('CONNECTED', 'LOGIN', 'LOGIN_SUCCESS', 'Login success'));
      connection.start();
      return { timestamp: response.timestamp };
    } catch (e) {
      if (attempt === this.#epoch) {
        this.#loggingIn = false;
        const err = e instanceof RTMBaseError ? e : rtmError('login', Code.LOGIN_TIMEOUT, `could not reach the server: ${(e as Error).message}`);
        const reasonCode: RTMEvents.LinkStateChangeReasonCode =
          err.errorCode === -10005 ? 'INVALID_TOKEN' : err.errorCode === -10009 ? 'TOKEN_EXPIRED' : err.errorCode === -10011 ? 'LOGIN_TIMEOUT' : 'LOGIN_REJECTED';
        this.#setLink(change('FAILED', 'LOGIN', reasonCode, err.reason));
        throw err;
      }
      throw e instanceof RTMBaseError ? e : rtmError('login', Code.LOGIN_CANCELED, 'logout was called while logging in');
    } finally {
      settle();
    }
  }

  /** Ends the session: its subscriptions, joins and states are gone. */
  async logout(): Promise<LogoutResponse> {
    const session = this.#session;
    if (!session && !this.#loggingIn) throw rtmError('logout', Code.NOT_LOGIN, 'not logged in');
    this.#loggingIn = false;
    this.#epoch += 1;
    this.#ended = null;
    this.#session = null;
    let timestamp = Date.now();
    if (session) {
      session.stop();
      const connection = session.connection;
      if (connection) {
        try {
          const r = await connection.request({ kind: 'Logout' }, 'logout');
          timestamp = r.timestamp;
        } catch {
          // The session ends with the connection anyway.
        }
        connection.close(0, 'logout');
      }
    }
    this.#parts.clear();
    this.#broken.clear();
    this.#setLink(change('IDLE', 'LOGOUT', 'LOGOUT', 'Logout success'));
    return { timestamp };
  }

  /** Renews the login token, or a stream channel's token with `options.channelName`. */
  async renewToken(token: string, options?: RenewTokenOptions): Promise<RenewTokenResponse> {
    const channel = options?.channelName;
    const request: wire.Request = channel ? { kind: 'RenewChannelToken', channel, token } : { kind: 'RenewToken', token };
    const r = await this.call('renewToken', request);
    const session = this.#session;
    if (session) {
      if (!channel) session.cache.token = token;
      else {
        const s = session.cache.streams.get(channel);
        if (s) s.options = { ...s.options, token };
      }
    }
    return { timestamp: r.timestamp };
  }

  /** Publishes to a message channel, or (`channelType: 'USER'`) to a user. */
  async publish(channelName: string, message: string | Uint8Array, options?: PublishOptions): Promise<PublishResponse> {
    const channelType = channelTypeNumber(options?.channelType ?? 'MESSAGE');
    if (channelType === null || channelType === 2) {
      throw rtmError('publish', Code.INVALID_CHANNEL_TYPE, 'publish goes to a MESSAGE channel or a USER; use a stream channel for STREAM');
    }
    const customType = options?.customType ?? '';
    const kind = options?.storeInHistory ? 'PublishAndStore' : 'Publish';
    const request = this.sealed('publish', message).then((payload): wire.Request => ({ kind, channelType, channel: channelName, message: payload, customType }));
    const r = await this.call('publish', request);
    return { timestamp: r.timestamp, channelName };
  }

  /** Subscribes to a message channel (or changes the options of a subscription). */
  async subscribe(channelName: string, options?: SubscribeOptions): Promise<SubscribeResponse> {
    const wireOptions: wire.SubscribeOptions = {
      withMessage: options?.withMessage ?? true,
      withPresence: options?.withPresence ?? true,
      beQuiet: options?.beQuiet ?? false,
      withMetadata: options?.withMetadata ?? false,
      withLock: options?.withLock ?? false,
    };
    const r = await this.call('subscribe', { kind: 'Subscribe', channel: channelName, options: wireOptions });
    this.#session?.cache.subscriptions.set(channelName, wireOptions);
    return { timestamp: r.timestamp, channelName };
  }

  /** Unsubscribes from a message channel. */
  async unsubscribe(channelName: string): Promise<UnsubscribeResponse> {
    const r = await this.call('unsubscribe', { kind: 'Unsubscribe', channel: channelName });
    this.#session?.cache.subscriptions.delete(channelName);
    this.#session?.cache.states.delete(`1:${channelName}`);
    return { timestamp: r.timestamp, channelName };
  }

  /** A stream channel; `join` it to use it. */
  createStreamChannel(channelName: string): StreamChannel {
    return new StreamChannel(this, channelName);
  }

  // ---- for the parts of the API (presence, storage, lock, history, stream channels) ----

  /**
   * Sends a request in the current session, or rejects as the reference does. Requests go out
   * in call order, also those whose request is still being made (a payload being sealed): each
   * waits for the ones called before it to be sent, not answered.
   */
  call(operation: string, request: wire.Request | Promise<wire.Request>, timeoutMs?: number): Promise<wire.Response> {
    const sent = this.#sending.then(async () => {
      const r = await request;
      return { answer: this.#send(operation, r, timeoutMs) };
    });
    this.#sending = sent.then(
      () => undefined,
      () => undefined,
    );
    return sent.then((s) => s.answer);
  }

  #send(operation: string, request: wire.Request, timeoutMs?: number): Promise<wire.Response> {
    const session = this.#session;
    if (!session) return Promise.reject(rtmError(operation, Code.NOT_LOGIN, 'not logged in: call login first'));
    const connection = session.connection;
    if (!connection || this.#state !== 'CONNECTED') {
      return Promise.reject(rtmError(operation, Code.NOT_CONNECTED, `not connected to the server (the link is ${this.#state})`));
    }
    return connection.request(request, operation, timeoutMs);
  }

  /** A payload to publish: text or bytes, sealed when encryption is on. */
  async sealed(operation: string, message: string | Uint8Array): Promise<wire.Payload> {
    if (typeof message !== 'string' && !(message instanceof Uint8Array)) {
      throw rtmError(operation, Code.CHANNEL_INVALID_MESSAGE, 'a message is a string or a Uint8Array');
    }
    const payload = toPayload(message);
    return this.#cipher ? this.#cipher.seal(payload) : payload;
  }

  // ---- inside ------------------------------------------------------------------------------

  #host(): SessionHost {
    return {
      appId: this.#appId,
      userId: this.#userId,
      urls: this.#config.privateConfig?.accessPointHosts ?? [],
      certificateHashes: hashes(this.#config.privateConfig?.serverCertificateHashes),
      heartbeatSec: this.#heartbeatSec,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      loginRequest: (token) => ({
        kind: 'Login',
        appId: this.#appId,
        userId: this.#userId,
        token,
        useStringUserId: this.#config.useStringUserId ?? true,
        heartbeatInterval: this.#heartbeatSec,
        presenceTimeout: this.#presenceTimeoutSec,
      }),
      onEvent: (lane, event, session) => (session === this.#session || session === this.#ended ? this.#event(lane, event) : undefined),
      onUnreadable: (lane, why) => {
        this.#lostFrames(lane);
        this.#events.emit('error', { errorCode: Code.CHANNEL_IN_ERROR_STATE, reason: `an event from the server could not be read: ${why}`, channelName: '', timestamp: Date.now() });
      },
      onGap: (lane) => this.#lostFrames(lane),
      setLink: (c) => this.#setLink(c),
      ended: (session) => {
        if (this.#session !== session) return;
        // Its events still being handled (decrypted, say) are handed on: the server queued
        // them before it ended the session.
        this.#ended = session;
        this.#session = null;
      },
    };
  }

  /**
   * Frames of `lane` were lost: a snapshot being joined there lost parts, so it and the parts
   * that follow it are dropped and reported rather than handed on cut (subscribe or join again
   * for a whole one). A lost part that was the first of a snapshot cannot be seen, so the lane
   * stays suspect until its next event that is not a part.
   */
  #lostFrames(lane: number): void {
    const joining = this.#parts.delete(lane);
    this.#broken.set(lane, joining || (this.#broken.get(lane) ?? false));
  }

  #setLink(c: LinkChange): void {
    // A new session (logged in again): whatever was being joined belongs to the old one.
    if (c.currentState === 'CONNECTED' && !c.isResumed) {
      this.#parts.clear();
      this.#broken.clear();
    }
    const previousState = this.#state;
    if (previousState === c.currentState) return;
    this.#state = c.currentState;
    this.#events.emit('linkState', { ...c, previousState, serviceType: 'MESSAGE', timestamp: Date.now() });
  }

  async #event(lane: number, event: wire.Event): Promise<void> {
    const broken = this.#broken.get(lane);
    if (broken !== undefined) {
      if (event.kind === 'Part') {
        this.#broken.set(lane, true);
        return;
      }
      this.#broken.delete(lane);
      if (broken && (event.kind === 'Presence' || event.kind === 'Topic')) {
        this.#events.emit('error', {
          errorCode: Code.CHANNEL_IN_ERROR_STATE,
          reason: `a ${event.kind.toLowerCase()} snapshot lost parts to a broken connection and was dropped: subscribe or join again for a whole one`,
          channelName: event.channelName,
          timestamp: Date.now(),
        });
        return;
      }
    }
    if (event.kind === 'Part') {
      const parts = this.#parts.get(lane) ?? [];
      parts.push(event.part);
      this.#parts.set(lane, parts);
      return;
    }
    const parts = this.#parts.get(lane);
    if (parts && (event.kind === 'Presence' || event.kind === 'Topic')) {
      this.#parts.delete(lane);
      event = joinParts(parts, event);
    }
    switch (event.kind) {
      case 'Message': {
        const payload = this.#cipher ? await this.#cipher.open(event.message) : event.message;
        this.#events.emit('message', messageEvent(event, payload));
        return;
      }
      case 'Presence':
        return this.#events.emit('presence', presenceEvent(event));
      case 'Topic':
        return this.#events.emit('topic', topicEvent(event));
      case 'Storage':
        return this.#events.emit('storage', storageEvent(event));
      case 'Lock':
        return this.#events.emit('lock', lockEvent(event));
      case 'TokenPrivilegeWillExpire':
        this.#events.emit('tokenPrivilegeWillExpire', event.channelName);
        this.#events.emit('token', {
          eventType: 'WILL_EXPIRE',
          reason: 'The token is about to expire',
          affectedResources: { messageChannels: event.channelName ? [event.channelName] : [] },
          timestamp: Date.now(),
        });
        return;
      case 'ChannelLeft':
        this.#session?.cache.streams.delete(event.channelName);
        this.#events.emit('linkState', {
          ...change('FAILED', 'SERVER_REJECT', event.reason === 'TokenExpired' ? 'TOKEN_EXPIRED' : 'KICKED_OUT_BY_SERVER', event.reason, [event.channelName]),
          previousState: 'CONNECTED',
          serviceType: 'STREAM',
          timestamp: Date.now(),
        });
        return;
      case 'MessagesLost':
        return this.#recover(event);
      case 'SessionClosed':
        return;
    }
  }

  /**
   * Gets back from the history the messages a resume could not resend (docs/protocol.md
   * §5.12.1), hands them on oldest first, and reports those it could not find.
   */
  async #recover(lost: wire.LostMessages): Promise<void> {
    const found: wire.HistoryMessage[] = [];
    let start = lost.to + 1;
    try {
      for (let page = 0; page < 100 && found.length < lost.count; page++) {
        const r = await this.call('recover', {
          kind: 'GetMessages',
          channelType: lost.channelType,
          channel: lost.channelName,
          messageCount: 100,
          start,
          end: lost.from,
        });
        if (r.kind !== 'Messages') break;
        const mine = lost.channelType === 3 ? r.messages.filter((m) => m.publisher === lost.channelName) : r.messages;
        found.push(...mine);
        if (r.newStart === 0) break;
        start = r.newStart;
      }
    } catch {
      // What was not found is reported below.
    }
    found.sort((a, b) => a.timestamp - b.timestamp);
    for (const m of found.slice(-lost.count)) {
      const payload = this.#cipher ? await this.#cipher.open(m.message) : m.message;
      this.#events.emit(
        'message',
        messageEvent({ channelType: lost.channelType, channelName: lost.channelName, topicName: '', message: m.message, customType: m.customType, publisher: m.publisher, timestamp: m.timestamp }, payload),
      );
    }
    const missing = lost.count - Math.min(found.length, lost.count);
    if (missing > 0) {
      this.#events.emit('messagesLost', { channelType: channelTypeName(lost.channelType), channelName: lost.channelName, from: lost.from, to: lost.to, count: missing, timestamp: Date.now() });
    }
  }
}
