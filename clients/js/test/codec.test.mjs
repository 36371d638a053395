// Tests of the wire codec (src/codec/): the golden frames that rtm-proto generates
// (test/golden/frames.json, from rtm-proto/tests/golden.rs), the worked example of
// docs/protocol.md §8, the primitives, the FrameReader, and hostile input.
//
// Run after compiling: `npx tsc -p tsconfig.json && node --test test/codec.test.mjs`.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  CodecError,
  FrameReader,
  FrameTooLongError,
  decodeClientMsg,
  decodeServerMsg,
  encodeClientMsg,
  encodeServerMsg,
  frame,
  isEventBody,
  peekResponseId,
} from '../dist/esm/codec/messages.js';
import { Reader, Writer } from '../dist/esm/codec/postcard.js';

const golden = JSON.parse(readFileSync(new URL('./golden/frames.json', import.meta.url), 'utf8'));

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const decoderOf = (direction) => (direction === 'client' ? decodeClientMsg : decodeServerMsg);
const encoderOf = (direction) => (direction === 'client' ? encodeClientMsg : encodeServerMsg);

/** The `kind`s from the message down to the variant its golden name names. */
function kindChain(msg) {
  const chain = [msg.kind];
  if (msg.kind === 'Request') chain.push(msg.request.kind);
  if (msg.kind === 'Response') chain.push(msg.result.ok ? msg.result.response.kind : 'Err');
  if (msg.kind === 'Event') {
    chain.push(msg.event.kind);
    if (msg.event.kind === 'Part') chain.push(msg.event.part.kind);
  }
  return chain;
}

/** Every `kind` and field-less enum value in a decoded message, as `field:Kind` / `field=Name`. */
function collectVariants(value, key, out) {
  if (Array.isArray(value)) {
    for (const item of value) collectVariants(item, key, out);
  } else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    if (typeof value.kind === 'string') out.add(`${key}:${value.kind}`);
    for (const [k, v] of Object.entries(value)) {
      if (k !== 'kind') collectVariants(v, k, out);
    }
  } else if (['eventType', 'storageType', 'qos', 'priority', 'reason', 'op'].includes(key) && typeof value === 'string') {
    out.add(`${key}=${value}`);
  } else if (key === 'channelType') {
    out.add(`${key}=${value}`);
  }
  return out;
}

/** Runs `f`; it may return or throw a CodecError, nothing else. */
function onlyCodecErrors(f, what) {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof CodecError)) {
      assert.fail(`${what}: threw ${e?.name}: ${e?.message}`);
    }
    assert.equal(typeof e.code, 'string');
    return undefined;
  }
}

/** A small deterministic PRNG (mulberry32), so that failures reproduce. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('golden frames from rtm-proto', () => {
  it('has the expected shape', () => {
    assert.match(golden.note, /RTM_UPDATE_GOLDEN=1/);
    assert.ok(golden.frames.length >= 100, `only ${golden.frames.length} frames`);
  });

  for (const g of golden.frames) {
    it(`${g.name} decodes, names its kinds and re-encodes to the same bytes`, () => {
      const bytes = fromHex(g.hex);
      const msg = decoderOf(g.direction)(bytes);
      const [direction, ...path] = g.name.split('/');
      assert.equal(direction, g.direction);
      const chain = kindChain(msg);
      assert.deepEqual(path.slice(0, chain.length), chain, `kinds ${chain.join('/')}`);
      const again = encoderOf(g.direction)(msg);
      assert.equal(toHex(again), g.hex);
      assert.deepEqual(decoderOf(g.direction)(again), msg);
      // The other direction's decoder does not take it for its own silently as the same thing.
      onlyCodecErrors(() => decoderOf(g.direction === 'client' ? 'server' : 'client')(bytes), g.name);
    });
  }

  it('covers every variant of every enum', () => {
    const seen = new Set();
    for (const g of golden.frames) collectVariants(decoderOf(g.direction)(fromHex(g.hex)), g.direction, seen);
    const expect = (field, sep, names) => {
      for (const n of names) assert.ok(seen.has(`${field}${sep}${n}`), `no golden frame has ${field}${sep}${n}`);
    };
    expect('client', ':', ['Hello', 'Request', 'Ack']);
    expect('server', ':', ['Welcome', 'Response', 'Event', 'Error', 'Lane']);
    expect('request', ':', [
      'Login', 'Logout', 'Subscribe', 'Unsubscribe', 'Publish', 'Ping', 'RenewToken', 'Heartbeat',
      'Resume', 'Join', 'Leave', 'JoinTopic', 'LeaveTopic', 'PublishTopic', 'SubscribeTopic',
      'UnsubscribeTopic', 'RenewChannelToken', 'SetState', 'GetState', 'RemoveState', 'WhoNow',
      'WhereNow', 'WriteMetadata', 'GetMetadata', 'SubscribeUserMetadata', 'UnsubscribeUserMetadata',
      'Lock', 'GetLocks', 'PublishAndStore', 'GetMessages', 'PublishBatch',
    ]);
    expect('response', ':', [
      'Login', 'Logout', 'Subscribe', 'Unsubscribe', 'Publish', 'Pong', 'RenewToken', 'Resume', 'Join',
      'Leave', 'JoinTopic', 'LeaveTopic', 'PublishTopic', 'SubscribeTopic', 'UnsubscribeTopic', 'State',
      'GetState', 'WhoNow', 'WhereNow', 'MetadataWritten', 'Metadata', 'Done', 'Locks', 'Messages',
      'PublishBatch',
    ]);
    expect('event', ':', [
      'Message', 'SessionClosed', 'TokenPrivilegeWillExpire', 'Topic', 'ChannelLeft', 'Presence',
      'Storage', 'Lock', 'MessagesLost', 'Part',
    ]);
    expect('part', ':', ['Presence', 'Topic']);
    expect('message', ':', ['Text', 'Binary', 'Encrypted']);
    expect('op', ':', ['Set', 'Remove', 'Acquire', 'Release', 'Revoke']);
    expect('op', '=', ['Set', 'Update', 'Remove']);
    expect('target', ':', ['Channel', 'User']);
    expect('qos', '=', ['Ordered', 'Unordered']);
    expect('priority', '=', ['Highest', 'High', 'Normal', 'Low']);
    expect('reason', '=', ['SameUidLogin', 'SlowConsumer', 'ServerShutdown', 'TokenExpired']);
    expect('storageType', '=', ['User', 'Channel']);
    expect('eventType', '=', ['Snapshot', 'Interval', 'RemoteJoin', 'RemoteLeave', 'RemoteTimeout', 'RemoteStateChanged']);
    expect('eventType', '=', ['Set', 'Update', 'Remove', 'Removed', 'Acquired', 'Released', 'Expired']);
    expect('channelType', '=', [1, 2, 3]);
  });

  it('decodes values as the model says', () => {
    const byName = new Map(golden.frames.map((g) => [g.name, g]));
    const decode = (name) => decoderOf(byName.get(name).direction)(fromHex(byName.get(name).hex));

    const login = decode('server/Response/Login');
    assert.equal(login.result.ok, true);
    assert.equal(login.result.response.timestamp, 1_760_000_000_123);
    assert.equal(login.result.response.ticket.sessionId, 0x0123_4567_89ab_cdefn);
    assert.deepEqual(login.result.response.ticket.secret, new Uint8Array(16).fill(0xa5));
    assert.deepEqual(login.result.response.limits, {
      maxMessageSize: 32_768,
      maxSubscriptions: 50,
      publishRate: 60,
      maxFrameLen: 36_864,
    });

    const resume = decode('client/Request/Resume');
    assert.equal(resume.request.ticket.sessionId, 0xfedc_ba98_7654_3210n);
    assert.deepEqual(resume.request.received, [3, 0, 4_294_967_296]);

    const setState = decode('client/Request/SetState');
    const states = setState.request.states;
    assert.deepEqual(Object.keys(states), ['', '__proto__', 'mood', 'ｚ', '😀']);
    assert.equal(Object.getPrototypeOf(states), Object.prototype);
    assert.equal(Object.getOwnPropertyDescriptor(states, '__proto__').value, 'not a prototype');

    const err = decode('server/Response/Err/unknown-code');
    assert.deepEqual(err, { kind: 'Response', id: 4_294_967_295, result: { ok: false, error: { code: -99_999, reason: 'code inconnu ✗' } } });

    const write = decode('client/Request/WriteMetadata/Set');
    assert.equal(write.request.options.majorRevision, -9_007_199_254_740_991);
    assert.deepEqual(write.request.items.map((i) => i.revision), [-1, 2 ** 40]);

    const interval = decode('server/Event/Presence/Interval');
    assert.equal(interval.event.interval.join[1], 'ß');
    assert.equal(decode('server/Event/Presence/RemoteJoin').event.interval, null);

    const binary = decode('server/Event/Message/binary');
    assert.deepEqual(binary.event.message, { kind: 'Binary', value: Uint8Array.of(0xde, 0xad, 0xbe, 0xef) });
    assert.equal(decode('server/Lane/15').lane, 15);
    assert.deepEqual(decode('client/Ack'), { kind: 'Ack', received: [0, 1, 300, 5_000_000_000, Number.MAX_SAFE_INTEGER] });
  });
});

describe('docs/protocol.md §8 worked example', () => {
  it('encodes the publish', () => {
    const body = encodeClientMsg({
      kind: 'Request',
      id: 300,
      request: {
        kind: 'Publish',
        channelType: 1,
        channel: 'ch',
        message: { kind: 'Binary', value: Uint8Array.of(0x09) },
        customType: 't',
      },
    });
    assert.equal(toHex(frame(body)), '0000000d01ac02040102636801010901' + '74');
  });

  it('decodes the error answer', () => {
    const bytes = fromHex('00000007' + '0102' + '01' + 'b1ac01' + '00');
    const reader = new FrameReader(1024);
    reader.push(bytes);
    const body = reader.next();
    assert.deepEqual(decodeServerMsg(body), {
      kind: 'Response',
      id: 2,
      result: { ok: false, error: { code: -11033, reason: '' } },
    });
    assert.equal(peekResponseId(body), 2);
    assert.equal(isEventBody(body), false);
    assert.equal(reader.next(), null);
  });

  it('matches the other golden bytes of rtm-proto message.rs', () => {
    assert.equal(toHex(frame(encodeClientMsg({ kind: 'Hello', version: 1, agent: 'a' }))), '0000000400010161');
    assert.equal(toHex(frame(encodeClientMsg({ kind: 'Ack', received: [300, 0, 1] }))), '00000006' + '0203ac020001');
    const join = {
      kind: 'Request',
      id: 1,
      request: {
        kind: 'Join',
        channel: 'c',
        options: { token: '', withPresence: true, beQuiet: false, withMetadata: false, withLock: false },
      },
    };
    assert.equal(toHex(frame(encodeClientMsg(join))), '0000000a' + '01010901630001000000');
  });
});

describe('postcard primitives', () => {
  const roundTrip = (write, read, value) => {
    const w = new Writer();
    write(w, value);
    const r = new Reader(w.finish());
    const back = read(r);
    r.finish();
    return back;
  };

  it('round-trips integer edges', () => {
    for (const v of [0, 1, 127, 128, 300, 0xffff_ffff]) assert.equal(roundTrip((w, x) => w.u32(x), (r) => r.u32(), v), v);
    for (const v of [0, 0xffff]) assert.equal(roundTrip((w, x) => w.u16(x), (r) => r.u16(), v), v);
    for (const v of [0, 2 ** 32, 2 ** 53 - 1]) assert.equal(roundTrip((w, x) => w.u64(x), (r) => r.u64(), v), v);
    for (const v of [0n, 2n ** 64n - 1n]) assert.equal(roundTrip((w, x) => w.u64Big(x), (r) => r.u64Big(), v), v);
    for (const v of [0, -1, 1, -11033, 2 ** 31 - 1, -(2 ** 31)]) assert.equal(roundTrip((w, x) => w.i32(x), (r) => r.i32(), v), v);
    for (const v of [0, -1, 1, 2 ** 52, -(2 ** 52), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]) {
      assert.equal(roundTrip((w, x) => w.i64(x), (r) => r.i64(), v), v);
    }
  });

  it('writes the bytes postcard writes', () => {
    const hex = (f) => {
      const w = new Writer();
      f(w);
      return toHex(w.finish());
    };
    assert.equal(hex((w) => w.i32(-11033)), 'b1ac01');
    assert.equal(hex((w) => w.u64Big(2n ** 64n - 1n)), 'ffffffffffffffffff01');
    assert.equal(hex((w) => w.i64(-Number.MAX_SAFE_INTEGER)), 'fdffffffffffff1f');
    assert.equal(hex((w) => w.i64(Number.MAX_SAFE_INTEGER)), 'feffffffffffff1f');
    assert.equal(hex((w) => w.option(null, () => {})), '00');
    assert.equal(hex((w) => w.option(7, (w2, v) => w2.u8(v))), '0107');
    // Keys in UTF-8 byte order: "ｚ" (ef bd 9a) before "😀" (f0 ...), unlike a UTF-16 sort.
    assert.equal(hex((w) => w.stringMap({ '😀': '', b: '1', ｚ: '', a: '2' })), '04' + '01610132' + '01620131' + '03efbd9a00' + '04f09f988000');
  });

  it('accepts overlong varints as the Rust decoder does', () => {
    assert.deepEqual(decodeClientMsg(Uint8Array.of(0x81, 0x00, 1, 1)), { kind: 'Request', id: 1, request: { kind: 'Logout' } });
  });

  const failsWith = (code, f) => assert.throws(f, (e) => e instanceof CodecError && e.code === code);

  it('refuses malformed input with typed errors', () => {
    failsWith('UnexpectedEnd', () => decodeClientMsg(new Uint8Array(0)));
    failsWith('TrailingBytes', () => decodeClientMsg(Uint8Array.of(1, 1, 5, 0)));
    failsWith('UnknownVariant', () => decodeClientMsg(Uint8Array.of(3)));
    failsWith('UnknownVariant', () => decodeClientMsg(Uint8Array.of(1, 1, 31)));
    failsWith('UnknownVariant', () => decodeServerMsg(Uint8Array.of(2, 10)));
    failsWith('UnknownVariant', () => decodeServerMsg(Uint8Array.of(1, 1, 2)));
    // Channel type 9 in a publish.
    failsWith('UnknownVariant', () => decodeClientMsg(Uint8Array.of(1, 1, 4, 9, 1, 0x63, 0, 0, 0)));
    // Six bytes for a u32, a fifth byte above 0x0f, eleven for a length.
    failsWith('VarintOverflow', () => decodeClientMsg(Uint8Array.of(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 5)));
    failsWith('VarintOverflow', () => decodeClientMsg(Uint8Array.of(1, 0xff, 0xff, 0xff, 0xff, 0x10, 5)));
    failsWith('VarintOverflow', () => decodeClientMsg(Uint8Array.of(2, ...new Array(10).fill(0x80), 1)));
    failsWith('VarintOverflow', () => decodeClientMsg(Uint8Array.of(0, 0xff, 0xff, 0x04, 0)));
    failsWith('UnsafeInteger', () => decodeClientMsg(Uint8Array.of(2, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10)));
    failsWith('InvalidBool', () => decodeClientMsg(Uint8Array.of(1, 1, 2, 1, 0x63, 2, 1, 0, 0, 0)));
    failsWith('InvalidUtf8', () => decodeClientMsg(Uint8Array.of(0, 1, 2, 0xc3, 0x28)));
    failsWith('TooLong', () => decodeClientMsg(Uint8Array.of(0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f)));
    failsWith('TooLong', () => decodeClientMsg(Uint8Array.of(2, 0xff, 0xff, 0xff, 0xff, 0x0f, 0)));
    // A map of 3 entries in 4 bytes.
    failsWith('TooLong', () => decodeClientMsg(Uint8Array.of(1, 1, 17, 1, 1, 0x63, 3, 0, 0, 0, 0)));
    // Option tag 2 in a presence event's interval.
    failsWith('InvalidOption', () => decodeServerMsg(Uint8Array.of(2, 5, 1, 1, 1, 0x63, 0, 0, 2)));
    // Parts do not nest: Event, Part, Part...
    failsWith('UnknownVariant', () => decodeServerMsg(Uint8Array.of(2, 9, 9, 9, 9)));
  });

  it('refuses values it cannot encode', () => {
    const bad = [
      { kind: 'Request', id: -1, request: { kind: 'Ping' } },
      { kind: 'Request', id: 2 ** 32, request: { kind: 'Ping' } },
      { kind: 'Request', id: 1.5, request: { kind: 'Ping' } },
      { kind: 'Request', id: 1, request: { kind: 'Nope' } },
      { kind: 'Request', id: 1, request: null },
      { kind: 'Ack', received: [2 ** 53] },
      { kind: 'Ack', received: 'no' },
      { kind: 'Hello', version: 70000, agent: '' },
      { kind: 'Hello', version: 1 },
      { kind: 'Request', id: 1, request: { kind: 'Resume', appId: '', userId: '', ticket: { sessionId: 1, secret: new Uint8Array(16) }, received: [] } },
      { kind: 'Request', id: 1, request: { kind: 'Resume', appId: '', userId: '', ticket: { sessionId: 1n, secret: new Uint8Array(15) }, received: [] } },
      { kind: 'Request', id: 1, request: { kind: 'SetState', channelType: 4, channel: 'c', states: {} } },
      { kind: 'Request', id: 1, request: { kind: 'SetState', channelType: 1, channel: 'c', states: { a: 1 } } },
      { kind: 'Request', id: 1, request: { kind: 'Publish', channelType: 1, channel: 'c', message: { kind: 'Binary', value: [1] }, customType: '' } },
    ];
    for (const msg of bad) failsWith('InvalidValue', () => encodeClientMsg(msg));
    failsWith('InvalidValue', () => encodeServerMsg({ kind: 'Response', id: 1, result: { response: { kind: 'Done', timestamp: 1 } } }));
    failsWith('InvalidValue', () => encodeServerMsg({ kind: 'Lane', lane: 256 }));
  });
});

describe('FrameReader', () => {
  const bodies = [Uint8Array.of(1, 2, 3), new Uint8Array(0), new Uint8Array(300).fill(7), Uint8Array.of(9)];
  const stream = () => {
    const parts = bodies.map(frame);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  const drain = (reader) => {
    const out = [];
    for (let b = reader.next(); b !== null; b = reader.next()) out.push(b);
    return out;
  };

  it('returns several frames of one chunk', () => {
    const reader = new FrameReader(1024);
    reader.push(stream());
    assert.deepEqual(drain(reader), bodies);
    assert.equal(reader.buffered, 0);
  });

  it('joins frames split across chunks of any size', () => {
    const bytes = stream();
    for (const size of [1, 2, 3, 5, 7, 64, 1000]) {
      const reader = new FrameReader(1024);
      const out = [];
      for (let i = 0; i < bytes.length; i += size) {
        reader.push(bytes.subarray(i, i + size));
        out.push(...drain(reader));
      }
      assert.deepEqual(out, bodies, `chunks of ${size}`);
    }
  });

  it('keeps nothing for a declared length before its bytes arrive', () => {
    const reader = new FrameReader(0xffff_ffff);
    reader.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0));
    assert.equal(reader.next(), null);
    assert.equal(reader.buffered, 5);
  });

  it('rejects an over-long length at once, then skips that frame and goes on', () => {
    for (const size of [1, 3, 6, 100]) {
      const reader = new FrameReader(8);
      const big = frame(new Uint8Array(40).fill(7));
      const next = frame(Uint8Array.of(0x6e, 0x65, 0x78, 0x74));
      const bytes = new Uint8Array([...big, ...next]);
      const out = [];
      const errors = [];
      for (let i = 0; i < bytes.length; i += size) {
        reader.push(bytes.subarray(i, i + size));
        for (;;) {
          try {
            const body = reader.next();
            if (body === null) break;
            out.push(body);
          } catch (e) {
            assert.ok(e instanceof FrameTooLongError && e instanceof CodecError);
            assert.equal(e.code, 'FrameTooLong');
            errors.push(e);
          }
        }
      }
      assert.equal(errors.length, 1, `chunks of ${size}`);
      assert.equal(errors[0].length, 40);
      assert.equal(errors[0].max, 8);
      assert.ok(errors[0].head.every((b) => b === 7));
      assert.deepEqual(out, [Uint8Array.of(0x6e, 0x65, 0x78, 0x74)]);
    }
  });

  it('keeps the head of an over-long body for its request id', () => {
    const reader = new FrameReader(4);
    const body = encodeServerMsg({ kind: 'Response', id: 300, result: { ok: true, response: { kind: 'Pong', timestamp: 1_760_000_000_123 } } });
    reader.push(frame(body));
    assert.throws(() => reader.next(), (e) => e instanceof FrameTooLongError && peekResponseId(e.head) === 300);
    assert.equal(reader.next(), null);
    assert.equal(reader.buffered, 0);
  });
});

describe('hostile input', () => {
  it('random bytes never throw anything but CodecError', () => {
    const random = rng(0x5eed);
    for (let i = 0; i < 20_000; i++) {
      const len = Math.floor(random() * 48);
      const bytes = Uint8Array.from({ length: len }, () => (random() < 0.3 ? Math.floor(random() * 12) : Math.floor(random() * 256)));
      for (const decode of [decodeClientMsg, decodeServerMsg]) {
        const msg = onlyCodecErrors(() => decode(bytes), `random ${toHex(bytes)}`);
        if (msg !== undefined) {
          const encode = decode === decodeClientMsg ? encodeClientMsg : encodeServerMsg;
          assert.deepEqual(decode(encode(msg)), msg);
        }
      }
    }
  });

  it('truncated and mutated golden frames never throw anything but CodecError', () => {
    const random = rng(0xc0dec);
    for (const g of golden.frames) {
      const decode = decoderOf(g.direction);
      const encode = encoderOf(g.direction);
      const bytes = fromHex(g.hex);
      const check = (mutated, what) => {
        const msg = onlyCodecErrors(() => decode(mutated), `${g.name} ${what}`);
        if (msg !== undefined) assert.deepEqual(decode(encode(msg)), msg, `${g.name} ${what}`);
      };
      for (let cut = 0; cut < bytes.length; cut++) {
        assert.throws(() => decode(bytes.subarray(0, cut)), CodecError, `${g.name} cut at ${cut}`);
      }
      for (let i = 0; i < 60; i++) {
        const m = Uint8Array.from(bytes);
        const at = Math.floor(random() * m.length);
        switch (i % 4) {
          case 0:
            m[at] ^= 1 << Math.floor(random() * 8);
            check(m, `flip at ${at}`);
            break;
          case 1:
            m[at] = Math.floor(random() * 256);
            check(m, `set at ${at}`);
            break;
          case 2:
            check(new Uint8Array([...m.subarray(0, at), Math.floor(random() * 256), ...m.subarray(at)]), `insert at ${at}`);
            break;
          default:
            check(new Uint8Array([...m.subarray(0, at), ...m.subarray(at + 1 + Math.floor(random() * 3))]), `delete at ${at}`);
        }
      }
    }
  });

  it('a huge claimed count costs nothing', () => {
    // An Ack claiming 2^53 - 1 lanes, then a Presence snapshot claiming 2^32 users.
    assert.throws(() => decodeClientMsg(Uint8Array.of(2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0)), (e) => e.code === 'TooLong');
    const presence = Uint8Array.of(2, 5, 0, 1, 1, 0x63, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10);
    assert.throws(() => decodeServerMsg(presence), (e) => e.code === 'TooLong');
  });
});
