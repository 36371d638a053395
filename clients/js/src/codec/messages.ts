/**
 * The rtm wire codec: message bodies (`docs/protocol.md` §3–§4) and length-prefixed frames
 * (§2).
 *
 * - [`encodeClientMsg`] / [`decodeClientMsg`] and [`encodeServerMsg`] / [`decodeServerMsg`]
 *   turn messages into frame bodies and back. Decoding accepts untrusted bytes: anything that
 *   is not exactly one valid message fails with a [`CodecError`], and nothing is allocated for
 *   lengths the input cannot hold.
 * - [`frame`] puts the 4-byte big-endian length in front of a body, for stream transports
 *   (QUIC, WebTransport). On WebSocket a binary message is a body alone (§1.5).
 * - [`FrameReader`] cuts a byte stream back into bodies.
 */

import { CodecError, type ClientMsg, type ServerMsg } from './model.js';
import { clientMsg } from './client.js';
import { Reader, Writer } from './postcard.js';
import { serverMsg } from './server.js';
import type { Codec } from './schema.js';

export { CodecError } from './model.js';

/** Size of a frame's length prefix. */
export const FRAME_HEADER_LEN = 4;

/** The largest frame body a server sends, which every client must accept (§2.2). */
export const MAX_SERVER_FRAME_LEN = 1024 * 1024;

/** A [`FrameReader`] keeps an empty buffer up to this size for the next frames. */
const RETAINED_BUFFER_LEN = 64 * 1024;

/** How many leading bytes of an over-long frame a [`FrameReader`] keeps (§2.2). */
export const OVERSIZED_HEAD_LEN = 16;

function encodeWith<T>(codec: Codec<T>, value: T): Uint8Array {
  const w = new Writer();
  codec.encode(w, value);
  return w.finish();
}

function decodeWith<T>(codec: Codec<T>, body: Uint8Array): T {
  if (!(body instanceof Uint8Array)) throw new CodecError('InvalidValue', 'a frame body must be a Uint8Array');
  const r = new Reader(body);
  const value = codec.decode(r);
  r.finish();
  return value;
}

/** Encodes a client message as a frame body (without the length prefix). */
export function encodeClientMsg(msg: ClientMsg): Uint8Array {
  return encodeWith(clientMsg, msg);
}

/** Decodes a frame body that must hold exactly one client message. */
export function decodeClientMsg(body: Uint8Array): ClientMsg {
  return decodeWith(clientMsg, body);
}

/** Encodes a server message as a frame body (without the length prefix). */
export function encodeServerMsg(msg: ServerMsg): Uint8Array {
  return encodeWith(serverMsg, msg);
}

/** Decodes a frame body that must hold exactly one server message. */
export function decodeServerMsg(body: Uint8Array): ServerMsg {
  return decodeWith(serverMsg, body);
}

/**
 * The request id at the start of a body that is a `ServerMsg::Response`, read without decoding
 * the rest; `null` for any other body. It lets a client fail the call whose answer it cannot
 * read (too long or undecodable) instead of leaving it waiting (§2.2, §1.5).
 */
export function peekResponseId(body: Uint8Array): number | null {
  try {
    const r = new Reader(body);
    if (r.variant() !== 1) return null;
    return r.u32();
  } catch (e) {
    if (e instanceof CodecError) return null;
    throw e;
  }
}

/**
 * Whether a body is a `ServerMsg::Event` (of any kind, even one this version does not know),
 * from its tag alone: over WebSocket such frames belong to the current lane (§1.5).
 */
export function isEventBody(body: Uint8Array): boolean {
  try {
    return new Reader(body).variant() === 2;
  } catch (e) {
    if (e instanceof CodecError) return false;
    throw e;
  }
}

/** A whole frame: the body's length as a big-endian u32, then the body. */
export function frame(body: Uint8Array): Uint8Array {
  if (!(body instanceof Uint8Array) || body.length > 0xffff_ffff) {
    throw new CodecError('InvalidValue', 'a frame body must be a Uint8Array of at most 2^32 - 1 bytes');
  }
  const out = new Uint8Array(FRAME_HEADER_LEN + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, FRAME_HEADER_LEN);
  return out;
}

/**
 * A frame whose declared length is above the reader's maximum. The reader skips its body as it
 * arrives and goes on with the next frame; `head` holds the body's first bytes (up to
 * [`OVERSIZED_HEAD_LEN`], as many as had arrived), enough to find a request id in it.
 */
export class FrameTooLongError extends CodecError {
  /** The declared body length. */
  readonly length: number;
  /** The reader's maximum at the time. */
  readonly max: number;
  /** The first bytes of the body. */
  readonly head: Uint8Array;

  constructor(length: number, max: number, head: Uint8Array) {
    super('FrameTooLong', `frame of ${length} bytes exceeds the maximum of ${max}`);
    this.name = 'FrameTooLongError';
    this.length = length;
    this.max = max;
    this.head = head;
  }
}

/**
 * Cuts a byte stream into frame bodies.
 *
 * [`push`](FrameReader.push) the bytes as they arrive, then call [`next`](FrameReader.next)
 * until it returns `null` ("not enough bytes yet", never an error). The reader keeps the bytes
 * after a complete frame for the next one. Memory follows the bytes that have arrived, never a
 * declared length: a length above the maximum throws a [`FrameTooLongError`] as soon as the
 * 4-byte header is there, and the reader then discards that frame's body as it arrives, so
 * calling `next` again goes on with the frame after it.
 */
export class FrameReader {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private skipping = 0;
  private max: number;

  /** A reader that refuses bodies longer than `maxFrameLen` bytes (1 MiB by default). */
  constructor(maxFrameLen: number = MAX_SERVER_FRAME_LEN) {
    this.max = FrameReader.checkMax(maxFrameLen);
  }

  private static checkMax(n: number): number {
    if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
      throw new CodecError('InvalidValue', `frame limit ${n} is not a u32`);
    }
    return n;
  }

  /** The largest body accepted. */
  get maxFrameLen(): number {
    return this.max;
  }

  /** Changes the largest body accepted, from the next frame on. */
  set maxFrameLen(n: number) {
    this.max = FrameReader.checkMax(n);
  }

  /** Bytes received and not yet returned (or skipped). */
  get buffered(): number {
    return this.end - this.start;
  }

  /** Appends bytes that arrived. */
  push(chunk: Uint8Array): void {
    if (!(chunk instanceof Uint8Array)) throw new CodecError('InvalidValue', 'a chunk must be a Uint8Array');
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const held = this.end - this.start;
      const needed = held + chunk.length;
      // Reuse the buffer when dropping what was consumed makes room; grow it otherwise.
      const target = needed <= this.buf.length ? this.buf : new Uint8Array(Math.max(needed, this.buf.length * 2, 256));
      if (target === this.buf) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        target.set(this.buf.subarray(this.start, this.end));
        this.buf = target;
      }
      this.start = 0;
      this.end = held;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /**
   * The next complete frame body (a copy the caller may keep), or `null` when it has not fully
   * arrived. Throws [`FrameTooLongError`] once per frame whose length is above the maximum.
   */
  next(): Uint8Array | null {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, this.end - this.start);
      this.start += n;
      this.skipping -= n;
      if (this.skipping > 0) return this.settle(null);
    }
    const held = this.end - this.start;
    if (held < FRAME_HEADER_LEN) return this.settle(null);
    const b = this.buf;
    const s = this.start;
    const len = ((b[s]! << 24) | (b[s + 1]! << 16) | (b[s + 2]! << 8) | b[s + 3]!) >>> 0;
    if (len > this.max) {
      this.start += FRAME_HEADER_LEN;
      const head = this.buf.slice(this.start, this.start + Math.min(len, OVERSIZED_HEAD_LEN, this.end - this.start));
      this.start += head.length;
      const rest = len - head.length;
      const now = Math.min(rest, this.end - this.start);
      this.start += now;
      this.skipping = rest - now;
      this.settle(null);
      throw new FrameTooLongError(len, this.max, head);
    }
    if (held < FRAME_HEADER_LEN + len) return this.settle(null);
    const body = this.buf.slice(s + FRAME_HEADER_LEN, s + FRAME_HEADER_LEN + len);
    this.start += FRAME_HEADER_LEN + len;
    return this.settle(body);
  }

  /**
   * Resets the offsets when everything was consumed, so the buffer is reused from its start
   * (or released, when a large frame made it large).
   */
  private settle<T>(value: T): T {
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
      if (this.buf.length > RETAINED_BUFFER_LEN) this.buf = new Uint8Array(0);
    }
    return value;
  }
}
