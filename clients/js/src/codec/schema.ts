/**
 * Building blocks that describe a message type once and derive both its encoder and its
 * decoder: structs (fields in wire order), `kind`-tagged unions (explicit variant indexes),
 * field-less enums, sequences and options.
 *
 * Descriptions are checked against the types of `./model.ts` by the compiler: a struct must
 * name every field of its type with a codec of that field's type, and a union every variant.
 */

import { CodecError, type ChannelType, type Payload, type WireError } from './model.js';
import type { Reader, Writer } from './postcard.js';

/** How one type is written and read. */
export interface Codec<T> {
  readonly encode: (w: Writer, value: T) => void;
  readonly decode: (r: Reader) => T;
}

/** A codec per field of `T`, in wire order (object literal order). */
export type Fields<T> = { readonly [K in keyof T]-?: Codec<T[K]> };

/** The fields of the variant of `U` named `K`, without `kind`. */
export type VariantFields<U extends { kind: string }, K extends U['kind']> = Omit<Extract<U, { kind: K }>, 'kind'>;

/** Each variant's wire index and fields. */
export type Variants<U extends { kind: string }> = {
  readonly [K in U['kind']]: readonly [index: number, fields: Fields<VariantFields<U, K>>];
};

function checkObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) {
    throw new CodecError('InvalidValue', `${what}: expected an object, got ${value === null ? 'null' : typeof value}`);
  }
  return value as Record<string, unknown>;
}

type Entries = ReadonlyArray<readonly [string, Codec<unknown>]>;

function fieldEntries(fields: object): Entries {
  return Object.entries(fields) as [string, Codec<unknown>][];
}

function encodeFields(w: Writer, entries: Entries, value: Record<string, unknown>): void {
  for (const [name, codec] of entries) codec.encode(w, value[name]);
}

function decodeFields(r: Reader, entries: Entries, out: Record<string, unknown>): void {
  for (const [name, codec] of entries) out[name] = codec.decode(r);
}

/** A struct: its fields one after the other, nothing between them. */
export function struct<T>(name: string, fields: Fields<T>): Codec<T> {
  const entries = fieldEntries(fields);
  return {
    encode: (w, value) => encodeFields(w, entries, checkObject(value, name)),
    decode: (r) => {
      const out: Record<string, unknown> = {};
      decodeFields(r, entries, out);
      return out as T;
    },
  };
}

/** A Rust enum with data as a `kind`-tagged union: the variant index, then its fields. */
export function union<U extends { kind: string }>(name: string, variants: Variants<U>): Codec<U> {
  const byKind = new Map<string, readonly [number, Entries]>();
  const byIndex: (readonly [string, Entries] | undefined)[] = [];
  for (const [kind, [index, fields]] of Object.entries(variants) as [string, readonly [number, object]][]) {
    if (byIndex[index] !== undefined) throw new Error(`${name}: variant index ${index} used twice`);
    const entries = fieldEntries(fields);
    byKind.set(kind, [index, entries]);
    byIndex[index] = [kind, entries];
  }
  return {
    encode: (w, value) => {
      const obj = checkObject(value, name);
      const variant = typeof obj['kind'] === 'string' ? byKind.get(obj['kind']) : undefined;
      if (variant === undefined) {
        throw new CodecError('InvalidValue', `${name}: unknown kind ${JSON.stringify(obj['kind'])}`);
      }
      w.variant(variant[0]);
      encodeFields(w, variant[1], obj);
    },
    decode: (r) => {
      const index = r.variant();
      const variant = byIndex[index];
      if (variant === undefined) throw new CodecError('UnknownVariant', `${name}: unknown variant ${index}`);
      const out: Record<string, unknown> = { kind: variant[0] };
      decodeFields(r, variant[1], out);
      return out as U;
    },
  };
}

/** A Rust enum without data as a union of names: the variant index alone. */
export function names<T extends string>(name: string, variants: { readonly [K in T]: number }): Codec<T> {
  const byIndex: (T | undefined)[] = [];
  for (const [variant, index] of Object.entries(variants) as [T, number][]) {
    if (byIndex[index] !== undefined) throw new Error(`${name}: variant index ${index} used twice`);
    byIndex[index] = variant;
  }
  const byName = new Map<string, number>(Object.entries(variants));
  return {
    encode: (w, value) => {
      const index = typeof value === 'string' ? byName.get(value) : undefined;
      if (index === undefined) throw new CodecError('InvalidValue', `${name}: unknown variant ${JSON.stringify(value)}`);
      w.variant(index);
    },
    decode: (r) => {
      const index = r.variant();
      const variant = byIndex[index];
      if (variant === undefined) throw new CodecError('UnknownVariant', `${name}: unknown variant ${index}`);
      return variant;
    },
  };
}

/** A sequence: its length, then the items (each at least one byte). */
export function seq<T>(item: Codec<T>): Codec<T[]> {
  return {
    encode: (w, value) => {
      if (!Array.isArray(value)) throw new CodecError('InvalidValue', 'expected an array');
      w.length(value.length);
      for (const v of value) item.encode(w, v);
    },
    decode: (r) => {
      const n = r.length(1);
      const out: T[] = [];
      for (let i = 0; i < n; i++) out.push(item.decode(r));
      return out;
    },
  };
}

/** An `Option<T>` as `T | null`. */
export function option<T>(some: Codec<T>): Codec<T | null> {
  return {
    encode: (w, value) => w.option(value, some.encode),
    decode: (r) => r.option(some.decode),
  };
}

// ---------------------------------------------------------------------------------------------
// Primitives

export const bool: Codec<boolean> = { encode: (w, v) => w.bool(v), decode: (r) => r.bool() };
export const u8: Codec<number> = { encode: (w, v) => w.u8(v), decode: (r) => r.u8() };
export const u16: Codec<number> = { encode: (w, v) => w.u16(v), decode: (r) => r.u16() };
export const u32: Codec<number> = { encode: (w, v) => w.u32(v), decode: (r) => r.u32() };
export const u64: Codec<number> = { encode: (w, v) => w.u64(v), decode: (r) => r.u64() };
export const u64Big: Codec<bigint> = { encode: (w, v) => w.u64Big(v), decode: (r) => r.u64Big() };
export const i32: Codec<number> = { encode: (w, v) => w.i32(v), decode: (r) => r.i32() };
export const i64: Codec<number> = { encode: (w, v) => w.i64(v), decode: (r) => r.i64() };
export const string: Codec<string> = { encode: (w, v) => w.string(v), decode: (r) => r.string() };
export const bytes: Codec<Uint8Array> = { encode: (w, v) => w.bytes(v), decode: (r) => r.bytes() };
export const stringMap: Codec<Record<string, string>> = {
  encode: (w, v) => w.stringMap(v),
  decode: (r) => r.stringMap(),
};
export const strings: Codec<string[]> = seq(string);
export const u64s: Codec<number[]> = seq(u64);

/** A fixed-size byte array (`[u8; size]`). */
export function fixed(size: number): Codec<Uint8Array> {
  return { encode: (w, v) => w.fixed(v, size), decode: (r) => r.fixed(size) };
}

/** A [`ChannelType`]: one byte, 1 to 3. */
export const channelType: Codec<ChannelType> = {
  encode: (w, v) => {
    if (v !== 1 && v !== 2 && v !== 3) throw new CodecError('InvalidValue', `channel type ${String(v)}`);
    w.u8(v);
  },
  decode: (r) => {
    const v = r.u8();
    if (v !== 1 && v !== 2 && v !== 3) throw new CodecError('UnknownVariant', `unknown channel type ${v}`);
    return v;
  },
};

/** A [`WireError`]. */
export const wireError: Codec<WireError> = struct<WireError>('WireError', { code: i32, reason: string });

/** A [`Payload`]: 0 text, 1 binary, 2 encrypted. */
export const payload: Codec<Payload> = union<Payload>('Payload', {
  Text: [0, { value: string }],
  Binary: [1, { value: bytes }],
  Encrypted: [2, { value: bytes }],
});
