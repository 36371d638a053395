// The two ways a JavaScript client reaches the server (docs/protocol.md §1.4, §1.5), behind
// one small interface: send a frame body, receive frame bodies tagged with the stream they
// came on, close with a protocol close code. The session above does not know which one it has.
//
// Nothing here touches a browser global until a connection is opened, so importing the
// package during server-side rendering is safe.

import { FrameReader, FrameTooLongError, OVERSIZED_HEAD_LEN } from './codec/messages.js';

/** Largest server frame a client must accept (docs/protocol.md §2.2). */
export const MAX_SERVER_FRAME = 1024 * 1024;
/** The WebSocket subprotocol. */
const SUBPROTOCOL = 'rtm.v1';

/** How a link ended. */
export interface LinkClosed {
  /** The protocol close code (§1.3), or null when the connection broke without one. */
  code: number | null;
  reason: string;
}

/** One connection to the server. */
export interface Link {
  /** `'websocket'` or `'webtransport'`. */
  readonly kind: 'websocket' | 'webtransport';
  /** Sends one frame body on the control stream. */
  send(body: Uint8Array): void;
  /** Closes: code 0 ends the session, any other leaves it for a resume (§1.3). */
  close(code: number, reason: string): void;
  /** Called for each frame body: `stream` is -1 for the control stream (the WebSocket), else the number of a delivery stream. */
  onFrame: (body: Uint8Array, stream: number) => void;
  /** Called once, when the link is gone (also after `close`). */
  onClose: (closed: LinkClosed) => void;
}

/** What opening a link needs. */
export interface LinkOptions {
  /** SHA-256 hashes of certificates to accept for WebTransport. */
  certificateHashes: Uint8Array[];
  /** Give up opening after this many ms. */
  timeoutMs: number;
}

/** Which transport a URL asks for, or null for a URL rtm cannot use. */
export function transportOf(url: string): 'websocket' | 'webtransport' | null {
  const scheme = url.slice(0, url.indexOf(':')).toLowerCase();
  if (scheme === 'ws' || scheme === 'wss') return 'websocket';
  if (scheme === 'https') return 'webtransport';
  return null;
}

/** Whether this platform can open a link to `url`. */
export function canOpen(url: string): boolean {
  const kind = transportOf(url);
  if (kind === 'webtransport') return typeof (globalThis as { WebTransport?: unknown }).WebTransport === 'function';
  return kind === 'websocket';
}

/** Opens a link to `url`; rejects when the server cannot be reached in time. */
export function openLink(url: string, options: LinkOptions): Promise<Link> {
  return transportOf(url) === 'webtransport' ? openWebTransport(url, options) : openWebSocket(url, options);
}

function noop(): void {}

// ---- WebSocket ---------------------------------------------------------------------------

interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
type SocketConstructor = new (url: string, protocols: string, options?: object) => SocketLike;

let nodeSocket: Promise<SocketConstructor> | undefined;

/**
 * The WebSocket to use: in Node the `ws` package (bounded reads, batched writes), also where
 * Node has a global WebSocket (22+); elsewhere the platform's.
 */
async function webSocketClass(): Promise<{ ctor: SocketConstructor; node: boolean }> {
  const global = (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
  const inNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === 'string';
  if (inNode || typeof global !== 'function') {
    nodeSocket ??= import('ws').then((m) => (m.default ?? m) as unknown as SocketConstructor);
    try {
      return { ctor: await nodeSocket, node: true };
    } catch (e) {
      if (typeof global !== 'function') throw e;
    }
  }
  return { ctor: global as SocketConstructor, node: false };
}

async function openWebSocket(url: string, options: LinkOptions): Promise<Link> {
  const { ctor, node } = await webSocketClass();
  // `ws` bounds what it reads (a larger message closes the socket); a browser reads whole
  // messages, checked below.
  const socket = node ? new ctor(url, SUBPROTOCOL, { maxPayload: 4 * MAX_SERVER_FRAME, perMessageDeflate: false }) : new ctor(url, SUBPROTOCOL);
  // `ws` hands Buffers (Uint8Arrays) as they are; asking it for ArrayBuffers costs a copy.
  socket.binaryType = node ? 'nodebuffer' : 'arraybuffer';
  // In Node, the frames sent in one turn of the event loop leave in one write: `ws` writes each
  // message on its own, and a write per message was a third of a publisher's CPU. The TCP
  // socket under `ws` is corked at the first send of a turn and uncorked once the turn is over.
  const tcp = node ? (socket as unknown as { _socket?: { cork(): void; uncork(): void } })._socket : undefined;
  const later = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  let corked = false;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.onopen = socket.onerror = socket.onclose = null;
      socket.close();
      reject(new Error(`no WebSocket connection to ${url} within ${options.timeoutMs} ms`));
    }, options.timeoutMs);
    socket.onopen = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.onerror = () => undefined;
    socket.onclose = (ev) => {
      clearTimeout(timer);
      reject(new Error(`the WebSocket to ${url} closed before it opened (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`));
    };
  });
  let done = false;
  const link: Link = {
    kind: 'websocket',
    send(body) {
      if (socket.readyState !== 1) return;
      if (tcp && later && !corked) {
        corked = true;
        tcp.cork();
        later(() => {
          corked = false;
          tcp.uncork();
        });
      }
      socket.send(body);
    },
    close(code, reason) {
      if (done) return;
      // Close code 0 is WebSocket 1000; any other n is 4000 + n (§1.5).
      try {
        socket.close(code === 0 ? 1000 : 4000 + code, reason.slice(0, 100));
      } catch {
        socket.close();
      }
      finish({ code, reason });
    },
    onFrame: noop,
    onClose: noop,
  };
  const finish = (closed: LinkClosed) => {
    if (done) return;
    done = true;
    socket.onmessage = socket.onclose = socket.onerror = null;
    link.onClose(closed);
  };
  socket.onmessage = (ev) => {
    const data = ev.data;
    let body: Uint8Array;
    if (data instanceof ArrayBuffer) body = new Uint8Array(data);
    // A plain Uint8Array over the Buffer's bytes (no copy): the codec's `slice()` then copies
    // payloads out, where a Buffer's `slice()` would hand the application a Buffer sharing the
    // socket's read chunk (with the bytes of other frames behind its `.buffer`).
    else if (data instanceof Uint8Array) body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      // A text message or something else: not this protocol.
      link.close(1, 'the server sent a text message');
      return;
    }
    // A frame over the limit is skipped as the server skips one (§2.2): its first bytes say
    // whether it was an answer (whose call then fails) or an event (counted, reported).
    link.onFrame(body.length > MAX_SERVER_FRAME ? body.subarray(0, OVERSIZED_HEAD_LEN) : body, -1);
  };
  socket.onclose = (ev) => {
    // 1000 is close code 0; 4000 + n is code n; anything else (or no close frame) is a break.
    const code = ev.code === 1000 ? 0 : ev.code >= 4000 && ev.code < 4100 ? ev.code - 4000 : null;
    finish({ code, reason: ev.reason || `WebSocket closed (${ev.code})` });
  };
  socket.onerror = noop;
  return link;
}

// ---- WebTransport ------------------------------------------------------------------------

interface WebTransportLike {
  ready: Promise<void>;
  closed: Promise<{ closeCode?: number; reason?: string }>;
  createBidirectionalStream(): Promise<{ readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> }>;
  incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;
  close(info?: { closeCode?: number; reason?: string }): void;
}
type WebTransportConstructor = new (url: string, options?: object) => WebTransportLike;

/** The WebTransport URL of an `https://host:port` access point (path `/rtm`). */
export function webTransportUrl(url: string): string {
  const u = new URL(url);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/rtm';
  return u.toString();
}

async function openWebTransport(url: string, options: LinkOptions): Promise<Link> {
  const ctor = (globalThis as { WebTransport?: WebTransportConstructor }).WebTransport;
  if (typeof ctor !== 'function') throw new Error('this platform has no WebTransport');
  const init = options.certificateHashes.length
    ? { serverCertificateHashes: options.certificateHashes.map((value) => ({ algorithm: 'sha-256', value })) }
    : {};
  const wt = new ctor(webTransportUrl(url), init);
  wt.closed.catch(() => undefined);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const control = await Promise.race([
    wt.ready.then(() => wt.createBidirectionalStream()),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no WebTransport session with ${url} within ${options.timeoutMs} ms`)), options.timeoutMs);
    }),
  ]).catch((e: unknown) => {
    try {
      wt.close({ closeCode: 0, reason: '' });
    } catch {
      // already gone
    }
    throw e;
  }).finally(() => clearTimeout(timer));
  const writer = control.writable.getWriter();
  let done = false;
  const link: Link = {
    kind: 'webtransport',
    send(body) {
      if (done) return;
      const framed = new Uint8Array(4 + body.length);
      new DataView(framed.buffer).setUint32(0, body.length);
      framed.set(body, 4);
      writer.write(framed).catch(() => undefined);
    },
    close(code, reason) {
      if (done) return;
      try {
        wt.close({ closeCode: code, reason: reason.slice(0, 100) });
      } catch {
        // already closed
      }
      finish({ code, reason });
    },
    onFrame: noop,
    onClose: noop,
  };
  const finish = (closed: LinkClosed) => {
    if (done) return;
    done = true;
    link.onClose(closed);
  };
  const pump = async (readable: ReadableStream<Uint8Array>, stream: number) => {
    const reader = readable.getReader();
    const frames = new FrameReader(MAX_SERVER_FRAME);
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end || done) return;
        frames.push(value);
        for (;;) {
          let body: Uint8Array | null;
          try {
            body = frames.next();
          } catch (e) {
            // Over 1 MiB: the reader skips its body; its first bytes go up as an unreadable frame.
            if (!(e instanceof FrameTooLongError)) throw e;
            body = e.head;
          }
          if (body === null) break;
          link.onFrame(body, stream);
        }
      }
    } catch (e) {
      if (!done && stream === -1) finish({ code: null, reason: `control stream failed: ${(e as Error).message}` });
      else if (!done) link.close(1, `a delivery stream failed: ${(e as Error).message}`);
    }
  };
  void pump(control.readable, -1);
  void (async () => {
    const streams = wt.incomingUnidirectionalStreams.getReader();
    let next = 0;
    try {
      for (;;) {
        const { value, done: end } = await streams.read();
        if (end || done) return;
        void pump(value, next++);
      }
    } catch {
      // the session ended; `closed` says how
    }
  })();
  wt.closed.then(
    (info) => finish({ code: info?.closeCode ?? 0, reason: info?.reason ?? '' }),
    (e: unknown) => finish({ code: null, reason: `WebTransport session lost: ${(e as Error)?.message ?? e}` }),
  );
  return link;
}
