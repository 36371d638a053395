// One connection's share of a session (docs/protocol.md §4, §5.6): the hello, the login or
// resume, requests and their answers, the delivery lanes with their frame counts and
// acknowledgements, and the heartbeat that keeps the connection alive and notices a dead one.

import { decodeServerMsg, encodeClientMsg, isEventBody, peekResponseId } from './codec/messages.js';
import type { CloseReason, Event, LoginLimits, Request, Response } from './codec/model.js';
import { Code, rtmError, RTMBaseError } from './errors.js';
import { type Link, type LinkClosed, openLink } from './transport.js';

/** The protocol version this client offers and speaks: 1, since it sends no `PublishBatch`
 * (version 2, docs/protocol.md §4.1); a server that speaks 2 welcomes it with 1. */
const PROTOCOL_VERSION = 1;
/** Lanes a session can have (§1.2). */
export const LANES = 16;
/** Acknowledge at least every this many frames of a lane (§5.5)... */
const ACK_EVERY = 512;
/** ...and every this many bytes of events (§5.5). */
const ACK_BYTES = 256 * 1024;
/** A heartbeat-silent server is given this much longer than the interval (§5.6). */
const GRACE_MS = 10_000;

/** The close codes of §1.3 that end a session for good, and why. */
const CLOSE_REASONS: Record<number, CloseReason> = { 0x10: 'SameUidLogin', 0x11: 'SlowConsumer', 0x12: 'ServerShutdown', 0x13: 'TokenExpired', 0x14: 'Kicked' };

/**
 * What survives from one connection of a session to the next: per lane, how many frames were
 * received, and the queue of their handling (events of a lane are handled one after the
 * other, in order, even when handling one waits, e.g. for decryption or a history query).
 */
export class Lanes {
  readonly received: number[] = new Array<number>(LANES).fill(0);
  readonly #chains: Promise<void>[] = new Array<Promise<void>>(LANES).fill(Promise.resolve());

  /** Queues `work` on `lane`, after what is already queued there. */
  queue(lane: number, work: () => Promise<void> | void): void {
    this.#chains[lane] = this.#chains[lane]!.then(work).catch((e: unknown) => {
      console.error('rtm: handling an event failed', e);
    });
  }

  /** Resolves once everything queued so far on every lane is handled. */
  settled(): Promise<void> {
    return Promise.all(this.#chains).then(() => undefined);
  }
}

/** How a connection ended. */
export type Ended =
  /** The session ended normally (logout, or the server closed it with code 0). */
  | { kind: 'closed' }
  /** The server ended the session on purpose: no resume. */
  | { kind: 'rejected'; reason: CloseReason; text: string }
  /** The connection was lost: the session waits for a resume. */
  | { kind: 'lost'; heartbeat: boolean; shutdown?: boolean; text: string };

/** What a connection needs from the session above it. */
export interface ConnectionOptions {
  url: string;
  certificateHashes: Uint8Array[];
  /** Opening (transport and first answer) gives up after this many ms. */
  openTimeoutMs: number;
  /** Requests give up after this many ms. */
  requestTimeoutMs: number;
  /** Seconds between heartbeats (§5.6). */
  heartbeatSec: number;
  /** Free text naming the client in the hello. */
  agent: string;
  lanes: Lanes;
  /** Called for every event, in lane order (awaited before the next of its lane). */
  onEvent: (lane: number, event: Event) => Promise<void> | void;
  /** Called once when the connection is gone. */
  onEnded: (ended: Ended) => void;
  /** Called for an event frame that could not be decoded (it is counted all the same). */
  onUnreadable: (lane: number, why: string) => void;
  /** Called when a resume says frames of `lane` were lost (the server no longer had them). */
  onGap: (lane: number) => void;
}

interface Pending {
  resolve: (r: Response) => void;
  reject: (e: RTMBaseError) => void;
  operation: string;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** A live connection that logged in or resumed. */
export class Connection {
  readonly link: Link;
  readonly #options: ConnectionOptions;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #laneOf = new Map<number, number>();
  readonly #acked: number[] = new Array<number>(LANES).fill(0);
  /**
   * Event frames that came before the first answer, with their lane as the `Lane` frames said
   * when they arrived (`null`: one that could not be read, and why). They are counted, and
   * handed on, once the client has reported the connection (after a resume's answer has said
   * where the counts go on).
   */
  #held: Array<[number, Event | null, string]> | null = [];
  /** Bytes of events received since the last acknowledgement. */
  #unackedBytes = 0;
  #lastFrame = Date.now();
  #timers: Array<ReturnType<typeof setInterval>> = [];
  #sessionClosed: CloseReason | null = null;
  #ended = false;
  /** Whether `open` handed the connection to its caller (only then is its end reported). */
  #opened = false;
  limits: LoginLimits | null = null;

  private constructor(link: Link, options: ConnectionOptions) {
    this.link = link;
    this.#options = options;
    link.onFrame = (body, stream) => this.#frame(body, stream);
    link.onClose = (closed) => this.#closed(closed);
  }

  /**
   * Opens a connection to `options.url` and sends `first` (a `Login` or `Resume`) after the
   * hello. Resolves with the connection and the answer; rejects with the server's refusal
   * (an `RTMBaseError` with its code) or, when the server cannot be reached, an `Error`.
   */
  static async open(options: ConnectionOptions, first: Request, operation: string): Promise<{ connection: Connection; response: Response }> {
    const link = await openLink(options.url, { certificateHashes: options.certificateHashes, timeoutMs: options.openTimeoutMs });
    const connection = new Connection(link, options);
    link.send(encodeClientMsg({ kind: 'Hello', version: PROTOCOL_VERSION, agent: options.agent }));
    let response: Response;
    try {
      response = await connection.request(first, operation, options.openTimeoutMs);
    } catch (e) {
      // The caller learns of the failure from this rejection, not from `onEnded`: a connection
      // that never opened is not the session's, and its end must not look like a lost one.
      // Only the server's answer is a refusal; a connection lost or silent before it is a
      // server that could not be reached (try the next access point, or later). Code 0 would
      // end the session on the server, so it is sent only after a refusal: a resume that got
      // no answer may have succeeded there, and must stay resumable.
      const refused = e instanceof RTMBaseError && e.serverCode !== undefined;
      connection.close(refused ? 0 : 3, refused ? 'refused' : 'no answer');
      if (!refused) throw new Error((e as Error).message);
      throw e;
    }
    // Lost between the answer and now: not reported (it was not open yet), so say it here.
    if (connection.#ended) throw new Error('the connection was lost as it opened');
    connection.#opened = true;
    if (response.kind === 'Resume') {
      // Counting goes on at the server's numbers (higher where it no longer had frames: what
      // was being joined there lost a part).
      response.nextFrame.forEach((n, lane) => {
        if (lane < LANES && n > options.lanes.received[lane]!) {
          options.lanes.received[lane] = n;
          options.lanes.queue(lane, () => options.onGap(lane));
        }
      });
    }
    if (response.kind === 'Login' || response.kind === 'Resume') connection.limits = response.limits;
    return { connection, response };
  }

  /** Starts the heartbeat and hands on the events held while the first answer was awaited. */
  start(): void {
    if (this.#ended) return;
    const held = this.#held ?? [];
    this.#held = null;
    for (const [lane, event, why] of held) {
      if (event) this.#event(lane, event);
      else this.#unreadable(lane, why);
    }
    const interval = this.#options.heartbeatSec * 1000;
    this.#timers.push(
      setInterval(() => {
        // The heartbeat acknowledges too (§5.6); its Pong is the server's sign of life.
        this.#send({ kind: 'Heartbeat', received: this.#options.lanes.received.slice() }, 'heartbeat').catch(() => undefined);
        this.#markAcked();
      }, interval),
      setInterval(() => {
        if (Date.now() - this.#lastFrame > interval + GRACE_MS) {
          this.#end({ kind: 'lost', heartbeat: true, text: `no frame from the server for ${this.#options.heartbeatSec + GRACE_MS / 1000} s` });
          this.link.close(3, 'heartbeat timeout');
        }
      }, 1000),
    );
  }

  /** Whether the connection is gone. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Sends `request` and resolves with its answer, or rejects with an `RTMBaseError`. */
  request(request: Request, operation: string, timeoutMs = this.#options.requestTimeoutMs): Promise<Response> {
    return this.#send(request, operation, timeoutMs);
  }

  #send(request: Request, operation: string, timeoutMs = this.#options.requestTimeoutMs): Promise<Response> {
    if (this.#ended) return Promise.reject(rtmError(operation, Code.NOT_CONNECTED, 'the connection is gone'));
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_fff0 ? 1 : this.#nextId + 1;
    return new Promise<Response>((resolve, reject) => {
      // No timeout for a call that waits on purpose (an acquire with retry): it ends with its
      // answer or the connection.
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.#pending.delete(id);
              reject(rtmError(operation, timeoutCode(operation), `no answer from the server within ${timeoutMs / 1000} s`));
            }, timeoutMs)
          : undefined;
      this.#pending.set(id, { resolve, reject, operation, timer });
      this.link.send(encodeClientMsg({ kind: 'Request', id, request }));
    });
  }

  /** Closes: code 0 ends the session on the server; any other code leaves it for a resume. */
  close(code: number, reason: string): void {
    this.#end({ kind: 'closed' });
    this.link.close(code, reason);
  }

  #frame(body: Uint8Array, stream: number): void {
    this.#lastFrame = Date.now();
    let msg;
    try {
      msg = decodeServerMsg(body);
    } catch (e) {
      this.#undecodable(body, stream, (e as Error).message);
      return;
    }
    switch (msg.kind) {
      case 'Welcome':
        if (msg.version !== PROTOCOL_VERSION) this.link.close(1, `server speaks version ${msg.version}`);
        return;
      case 'Response': {
        const pending = this.#pending.get(msg.id);
        if (!pending) return;
        this.#pending.delete(msg.id);
        clearTimeout(pending.timer);
        if (msg.result.ok) pending.resolve(msg.result.response);
        else pending.reject(rtmError(pending.operation, msg.result.error.code, msg.result.error.reason, msg.result.error.code));
        return;
      }
      case 'Error':
        console.warn(`rtm: server error ${msg.code}: ${msg.reason}`);
        return;
      case 'Lane':
        if (msg.lane < LANES) this.#laneOf.set(stream, msg.lane);
        return;
      case 'Event': {
        const lane = this.#laneOf.get(stream) ?? 0;
        this.#unackedBytes += body.length;
        if (this.#held) this.#held.push([lane, msg.event, '']);
        else this.#event(lane, msg.event);
      }
    }
  }

  /**
   * A frame this client cannot read (§2.2): an answer fails its call; an event still counts as
   * a frame of its lane, and is reported.
   */
  #undecodable(body: Uint8Array, stream: number, why: string): void {
    const id = peekResponseId(body);
    if (id !== null) {
      const pending = this.#pending.get(id);
      if (pending) {
        this.#pending.delete(id);
        clearTimeout(pending.timer);
        pending.reject(rtmError(pending.operation, Code.INVALID_PARAMETER, `the server's answer could not be read: ${why}`));
      }
      return;
    }
    if (stream !== -1 || isEventBody(body)) {
      const lane = this.#laneOf.get(stream) ?? 0;
      if (this.#held) this.#held.push([lane, null, why]);
      else this.#unreadable(lane, why);
    }
  }

  #unreadable(lane: number, why: string): void {
    this.#count(lane);
    this.#options.lanes.queue(lane, () => this.#options.onUnreadable(lane, why));
  }

  #event(lane: number, event: Event): void {
    this.#count(lane);
    if (event.kind === 'SessionClosed') this.#sessionClosed = event.reason;
    this.#options.lanes.queue(lane, () => this.#options.onEvent(lane, event));
  }

  #count(lane: number): void {
    const received = this.#options.lanes.received;
    received[lane]! += 1;
    if (received[lane]! - this.#acked[lane]! >= ACK_EVERY || this.#unackedBytes >= ACK_BYTES) {
      this.link.send(encodeClientMsg({ kind: 'Ack', received: received.slice() }));
      this.#markAcked();
    }
  }

  #markAcked(): void {
    this.#unackedBytes = 0;
    this.#options.lanes.received.forEach((n, i) => (this.#acked[i] = n));
  }

  #closed(closed: LinkClosed): void {
    const code = closed.code;
    if (this.#sessionClosed && this.#sessionClosed !== 'ServerShutdown') {
      this.#end({ kind: 'rejected', reason: this.#sessionClosed, text: closed.reason });
    } else if (code !== null && CLOSE_REASONS[code] && code !== 0x12) {
      this.#end({ kind: 'rejected', reason: CLOSE_REASONS[code]!, text: closed.reason });
    } else if (code === 0) {
      this.#end({ kind: 'closed' });
    } else {
      // Also 0x04 (the session was resumed on another connection: retrying resumes it here
      // again, as the Rust client does) and 0x12 (the server is stopping).
      this.#end({ kind: 'lost', heartbeat: code === 3, shutdown: code === 0x12, text: closed.reason });
    }
  }

  #end(ended: Ended): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(rtmError(p.operation, Code.NOT_CONNECTED, `the connection to the server was lost (${ended.kind === 'closed' ? 'closed' : ended.text})`));
    }
    this.#pending.clear();
    if (this.#opened) this.#options.onEnded(ended);
  }
}

/** The code of a call that got no answer in time (as the Rust client's `timeout_code`). */
function timeoutCode(operation: string): number {
  if (operation === 'login' || operation === 'resume') return Code.LOGIN_TIMEOUT;
  if (operation === 'publish' || operation === 'publishTopicMessage') return Code.CHANNEL_PUBLISH_MESSAGE_TIMEOUT;
  if (operation === 'subscribe') return -11019; // CHANNEL_SUBSCRIBE_TIMEOUT
  if (operation.endsWith('Metadata')) return -12018; // STORAGE_OPERATION_TIMEOUT
  if (operation.endsWith('Lock')) return -14002; // LOCK_OPERATION_TIMEOUT
  if (operation === 'getMessages') return Code.HISTORY_OPERATION_TIMEOUT;
  return Code.NOT_CONNECTED;
}
