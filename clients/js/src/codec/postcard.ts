/**
 * The postcard 1.x primitives the rtm protocol uses (`docs/protocol.md` §3), written and read
 * by hand: a growable [`Writer`] and a bounds-checked [`Reader`].
 *
 * The reader takes untrusted bytes. Every length it reads (string, bytes, sequence, map) is
 * compared with the bytes that are left before anything is allocated, varints longer than
 * their type allows are refused, and every failure is a [`CodecError`]. It accepts exactly what
 * the Rust decoder accepts, including non-canonical ("overlong") varints such as `81 00` for 1.
 */

import { CodecError } from './model.js';

/** Largest number of bytes of a varint, per type, and the largest value its last byte may hold. */
const U16_MAX_BYTES = 3;
const U16_LAST_MAX = 0x03;
const U32_MAX_BYTES = 5;
const U32_LAST_MAX = 0x0f;
const U64_MAX_BYTES = 10;
const U64_LAST_MAX = 0x01;

const TWO_POW_52 = 2 ** 52;

let encoder: TextEncoder | undefined;
let decoder: TextDecoder | undefined;

/** UTF-8 bytes of `s` (a lone surrogate becomes U+FFFD, as `TextEncoder` does). */
export function utf8(s: string): Uint8Array {
  encoder ??= new TextEncoder();
  return encoder.encode(s);
}

function fromUtf8(bytes: Uint8Array): string {
  decoder ??= new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return decoder.decode(bytes);
  } catch {
    throw new CodecError('InvalidUtf8', 'a string is not valid UTF-8');
  }
}

/** Orders byte strings as Rust orders `[u8]` (and so `String` keys of a `BTreeMap`). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

function invalid(what: string, value: unknown): CodecError {
  const shown = typeof value === 'bigint' ? `${value}n` : typeof value === 'string' ? JSON.stringify(value) : String(value);
  return new CodecError('InvalidValue', `${what}: cannot encode ${shown}`);
}

function checkUint(value: unknown, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw invalid(what, value);
  }
  return value;
}

/** Appends postcard-encoded values to a buffer that grows as needed. */
export class Writer {
  private buf: Uint8Array;
  private len = 0;

  constructor(capacity = 64) {
    this.buf = new Uint8Array(Math.max(8, capacity));
  }

  /** The bytes written so far (a copy). */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(this.len + n, this.buf.length * 2));
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  /** Raw bytes, without a length. */
  raw(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /** A `u8`: one byte as is. */
  u8(value: number): void {
    checkUint(value, 0xff, 'u8');
    this.reserve(1);
    this.buf[this.len++] = value;
  }

  /** A `bool`: `0x00` or `0x01`. */
  bool(value: boolean): void {
    if (typeof value !== 'boolean') throw invalid('bool', value);
    this.reserve(1);
    this.buf[this.len++] = value ? 1 : 0;
  }

  /** An unsigned varint of a safe integer (shared by the u16/u32/u64 writers). */
  private varint(value: number): void {
    this.reserve(U64_MAX_BYTES);
    let v = value;
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  /** A `u16` varint. */
  u16(value: number): void {
    this.varint(checkUint(value, 0xffff, 'u16'));
  }

  /** A `u32` varint. */
  u32(value: number): void {
    this.varint(checkUint(value, 0xffff_ffff, 'u32'));
  }

  /** A `u64` varint of a `number` (at most `Number.MAX_SAFE_INTEGER`). */
  u64(value: number): void {
    this.varint(checkUint(value, Number.MAX_SAFE_INTEGER, 'u64'));
  }

  /** A `u64` varint of a `bigint` (0 to 2^64 - 1). */
  u64Big(value: bigint): void {
    if (typeof value !== 'bigint' || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
      throw invalid('u64', value);
    }
    this.reserve(U64_MAX_BYTES);
    let v = value;
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }

  /** An `i32`: zigzag, then a varint. */
  i32(value: number): void {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) {
      throw invalid('i32', value);
    }
    this.varint(((value << 1) ^ (value >> 31)) >>> 0);
  }

  /** An `i64` of a safe integer: zigzag, then a varint. */
  i64(value: number): void {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw invalid('i64', value);
    if (Math.abs(value) < TWO_POW_52) {
      this.varint(value >= 0 ? value * 2 : -value * 2 - 1);
    } else {
      const v = BigInt(value);
      this.u64Big(v >= 0n ? v * 2n : -v * 2n - 1n);
    }
  }

  /** A sequence or map length, or a string or bytes length: a varint. */
  length(n: number): void {
    this.varint(checkUint(n, Number.MAX_SAFE_INTEGER, 'length'));
  }

  /** An enum's variant index: a varint. */
  variant(index: number): void {
    this.u32(index);
  }

  /** A `string`: its UTF-8 byte length, then the bytes. */
  string(value: string): void {
    if (typeof value !== 'string') throw invalid('string', value);
    const bytes = utf8(value);
    this.length(bytes.length);
    this.raw(bytes);
  }

  /** Bytes: their length, then the bytes. */
  bytes(value: Uint8Array): void {
    if (!(value instanceof Uint8Array)) throw invalid('bytes', value);
    this.length(value.length);
    this.raw(value);
  }

  /** A fixed-size byte array (`[u8; N]`): the bytes alone, exactly `size` of them. */
  fixed(value: Uint8Array, size: number): void {
    if (!(value instanceof Uint8Array) || value.length !== size) {
      throw invalid(`[u8; ${size}]`, value);
    }
    this.raw(value);
  }

  /** An `Option<T>`: `0x00` for `null`, else `0x01` then the value. */
  option<T>(value: T | null, some: (w: Writer, v: T) => void): void {
    if (value === null || value === undefined) {
      this.reserve(1);
      this.buf[this.len++] = 0;
    } else {
      this.reserve(1);
      this.buf[this.len++] = 1;
      some(this, value);
    }
  }

  /** A `map<string, string>`: the count, then key/value pairs sorted by the keys' UTF-8 bytes. */
  stringMap(map: Record<string, string>): void {
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw invalid('map', map);
    const entries = Object.keys(map).map((key) => ({ key: utf8(key), value: map[key] as unknown }));
    entries.sort((a, b) => compareBytes(a.key, b.key));
    this.length(entries.length);
    for (const { key, value } of entries) {
      this.length(key.length);
      this.raw(key);
      this.string(value as string);
    }
  }
}

/** Reads postcard-encoded values from untrusted bytes, checking every length first. */
export class Reader {
  private pos = 0;

  constructor(private readonly input: Uint8Array) {}

  /** Bytes not read yet. */
  get remaining(): number {
    return this.input.length - this.pos;
  }

  /** Fails with `TrailingBytes` unless every byte has been read. */
  finish(): void {
    if (this.remaining !== 0) {
      throw new CodecError('TrailingBytes', `${this.remaining} bytes left after the message`);
    }
  }

  /** Takes `n` raw bytes (a view into the input, not a copy). */
  private take(n: number): Uint8Array {
    if (n > this.remaining) {
      throw new CodecError('UnexpectedEnd', `needed ${n} bytes at offset ${this.pos}, ${this.remaining} left`);
    }
    const out = this.input.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A `u8`. */
  u8(): number {
    if (this.pos >= this.input.length) {
      throw new CodecError('UnexpectedEnd', `input ended at offset ${this.pos}`);
    }
    return this.input[this.pos++]!;
  }

  /** A `bool`: only `0x00` and `0x01` are valid. */
  bool(): boolean {
    const b = this.u8();
    if (b > 1) throw new CodecError('InvalidBool', `bool byte 0x${b.toString(16)} at offset ${this.pos - 1}`);
    return b === 1;
  }

  /**
   * An unsigned varint of at most `maxBytes` bytes whose last byte, at full length, holds at
   * most `lastMax`. Values up to `Number.MAX_SAFE_INTEGER` come back exact; a larger one comes
   * back rounded but still above `Number.MAX_SAFE_INTEGER` (every partial sum is a sum of
   * non-negative terms), which is all the callers need to refuse it. `u64Big` reads exactly.
   */
  private varint(maxBytes: number, lastMax: number, what: string): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < maxBytes; i++) {
      const b = this.u8();
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (i === maxBytes - 1 && b > lastMax) break;
        return value;
      }
      scale *= 0x80;
    }
    throw new CodecError('VarintOverflow', `${what} varint too long or too large before offset ${this.pos}`);
  }

  /** A `u16` varint. */
  u16(): number {
    return this.varint(U16_MAX_BYTES, U16_LAST_MAX, 'u16');
  }

  /** A `u32` varint. */
  u32(): number {
    return this.varint(U32_MAX_BYTES, U32_LAST_MAX, 'u32');
  }

  /** A `u64` varint as a `number`; `UnsafeInteger` above `Number.MAX_SAFE_INTEGER`. */
  u64(): number {
    const value = this.varint(U64_MAX_BYTES, U64_LAST_MAX, 'u64');
    if (value > Number.MAX_SAFE_INTEGER) {
      throw new CodecError('UnsafeInteger', `u64 above 2^53 - 1 before offset ${this.pos}`);
    }
    return value;
  }

  /** A `u64` varint as a `bigint`, exact over the whole range. */
  u64Big(): bigint {
    let value = 0n;
    for (let i = 0; i < U64_MAX_BYTES; i++) {
      const b = this.u8();
      value |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        if (i === U64_MAX_BYTES - 1 && b > U64_LAST_MAX) break;
        return value;
      }
    }
    throw new CodecError('VarintOverflow', `u64 varint too long or too large before offset ${this.pos}`);
  }

  /** An `i32`: a zigzag varint. */
  i32(): number {
    const u = this.u32();
    return (u >>> 1) ^ -(u & 1);
  }

  /** An `i64` as a `number`: a zigzag varint; `UnsafeInteger` beyond ±(2^53 - 1). */
  i64(): number {
    const u = this.u64Big();
    const n = (u >> 1n) ^ -(u & 1n);
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CodecError('UnsafeInteger', `i64 beyond ±(2^53 - 1) before offset ${this.pos}`);
    }
    return Number(n);
  }

  /** An enum's variant index. */
  variant(): number {
    return this.u32();
  }

  /**
   * A length that announces `n` items of at least `minItemBytes` bytes each; `TooLong` when the
   * input cannot hold them, so that no caller ever allocates for bytes that are not there.
   */
  length(minItemBytes = 1): number {
    const at = this.pos;
    const n = this.varint(U64_MAX_BYTES, U64_LAST_MAX, 'length');
    if (n * minItemBytes > this.remaining) {
      throw new CodecError('TooLong', `length ${n} at offset ${at} exceeds the ${this.remaining} bytes left`);
    }
    return n;
  }

  /** A `string`. */
  string(): string {
    const n = this.length();
    return fromUtf8(this.take(n));
  }

  /** Bytes, copied out of the input. */
  bytes(): Uint8Array {
    const n = this.length();
    return this.take(n).slice();
  }

  /** A fixed-size byte array (`[u8; N]`), copied out of the input. */
  fixed(size: number): Uint8Array {
    return this.take(size).slice();
  }

  /** An `Option<T>`: `null` for `0x00`, the value after `0x01`. */
  option<T>(some: (r: Reader) => T): T | null {
    const tag = this.u8();
    if (tag === 0) return null;
    if (tag === 1) return some(this);
    throw new CodecError('InvalidOption', `option tag 0x${tag.toString(16)} at offset ${this.pos - 1}`);
  }

  /**
   * A `map<string, string>`. Keys may come in any order and a repeated key keeps its last
   * value, as Rust's `BTreeMap` decoder does. Keys are own properties even when named like
   * `Object.prototype` members (`__proto__`).
   */
  stringMap(): Record<string, string> {
    const n = this.length(2);
    const out: Record<string, string> = {};
    for (let i = 0; i < n; i++) {
      const key = this.string();
      const value = this.string();
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}
