// Unit tests of the SDK's parts that need no server: configuration checks, the reconnect
// schedule, error codes, the mapping of wire events to the reference's objects, encryption
// against an independent implementation (node:crypto), and import without browser globals.
// Run after the build: node --test test/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

import AgoraRTM, { ERROR_NAMES, RTMBaseError } from '../dist/esm/index.js';
import { afterFailure, clampSeconds, jittered, MAX_RETRY_MS, SUSPEND_AFTER_MS } from '../dist/esm/reconnect.js';
import { joinParts, presenceEvent, storageData, topicEvent } from '../dist/esm/mapping.js';
import { Cipher } from '../dist/esm/crypto.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const REPO = path.resolve(ROOT, '..', '..');
const hosts = { privateConfig: { serviceType: ['MESSAGE'], accessPointHosts: ['ws://127.0.0.1:1/rtm'] } };

function rejectsWith(fn, code) {
  assert.throws(fn, (e) => e instanceof RTMBaseError && e.errorCode === code && e.code === code && e.error === true && typeof e.reason === 'string' && e.operation === 'new');
}

test('the constructor checks the App ID, the user id and the encryption settings', () => {
  rejectsWith(() => new AgoraRTM.RTM('', 'u', hosts), -10003);
  rejectsWith(() => new AgoraRTM.RTM('app-with-dash', 'u', hosts), -10003);
  rejectsWith(() => new AgoraRTM.RTM('app', '', hosts), -10006);
  rejectsWith(() => new AgoraRTM.RTM('app', 'null', hosts), -10006);
  rejectsWith(() => new AgoraRTM.RTM('app', 'x'.repeat(65), hosts), -10006);
  rejectsWith(() => new AgoraRTM.RTM('app', 'tony', { ...hosts, useStringUserId: false }), -10006);
  assert.ok(new AgoraRTM.RTM('app', '123', { ...hosts, useStringUserId: false }));
  rejectsWith(() => new AgoraRTM.RTM('app', 'u', { ...hosts, encryptionMode: 'AES_128_GCM' }), -10020);
  rejectsWith(() => new AgoraRTM.RTM('app', 'u', { ...hosts, encryptionMode: 'AES_128_GCM', cipherKey: 'k', salt: new Uint8Array(33) }), -10020);
  rejectsWith(() => new AgoraRTM.RTM('app', 'u', { privateConfig: { ...hosts.privateConfig, serverCertificateHashes: ['abcd'] } }), -10024);
  assert.ok(new AgoraRTM.RTM('app', 'Tony <3 @home', { ...hosts, encryptionMode: 'AES_256_GCM', cipherKey: 'k', salt: new Uint8Array(5) }));
});

test('calls before login reject with NOT_LOGIN; login without an access point with INVALID_PRIVATE_CONFIG', async () => {
  const rtm = new AgoraRTM.RTM('app', 'u', hosts);
  await assert.rejects(rtm.publish('ch', 'x'), (e) => e.errorCode === -10002 && e.operation === 'publish');
  await assert.rejects(rtm.presence.whoNow('ch', 'MESSAGE'), (e) => e.errorCode === -10002 && e.operation === 'whoNow');
  await assert.rejects(rtm.logout(), (e) => e.errorCode === -10002);
  await assert.rejects(new AgoraRTM.RTM('app', 'u').login(), (e) => e.errorCode === -10024 && e.operation === 'login');
});

test('the reconnect schedule doubles to 30 s, jitters within [d/2, d], and suspends after 2 minutes', () => {
  let delay = 2000;
  const seen = [];
  let away = 0;
  for (let i = 0; i < 8; i++) {
    away += delay;
    const next = afterFailure(away, delay);
    seen.push([next.state, next.nextDelayMs]);
    delay = next.nextDelayMs;
  }
  assert.deepEqual(seen.map((s) => s[1]), [4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
  assert.equal(afterFailure(SUSPEND_AFTER_MS - 1, 16000).state, 'DISCONNECTED');
  assert.deepEqual(afterFailure(SUSPEND_AFTER_MS, 16000), { state: 'SUSPENDED', nextDelayMs: MAX_RETRY_MS });
  for (const d of [2000, 3001, 30000]) {
    assert.equal(jittered(d, 0), Math.floor(d / 2));
    assert.ok(jittered(d, 0.999999) <= d);
    for (let i = 0; i < 100; i++) {
      const w = jittered(d, Math.random());
      assert.ok(w >= d / 2 - 1 && w <= d, `${w} outside [${d / 2}, ${d}]`);
    }
  }
  assert.equal(clampSeconds(undefined, 5, 1800, 5), 5);
  assert.equal(clampSeconds(1, 5, 1800, 5), 5);
  assert.equal(clampSeconds(9999, 5, 300, 300), 300);
});

test('the error code table matches rtm-proto/src/error.rs', () => {
  const rust = fs.readFileSync(path.join(REPO, 'rtm-proto', 'src', 'error.rs'), 'utf8');
  const pairs = [...rust.matchAll(/= (-?\d+) => "([A-Z_]+)"/g)].map((m) => [Number(m[1]), m[2]]);
  assert.ok(pairs.length > 100);
  assert.deepEqual(Object.entries(ERROR_NAMES).map(([k, v]) => [Number(k), v]).sort((a, b) => a[0] - b[0]), pairs.sort((a, b) => a[0] - b[0]));
});

test('wire events become the reference objects', () => {
  const p = presenceEvent({
    eventType: 'RemoteStateChanged', channelType: 1, channelName: 'room', publisher: 'bob',
    stateChanged: { typing: 'true' }, interval: null, snapshot: [], timestamp: 5,
  });
  assert.deepEqual(p, { eventType: 'REMOTE_STATE_CHANGED', channelType: 'MESSAGE', channelName: 'room', publisher: 'bob', stateChanged: { typing: 'true' }, interval: null, snapshot: null, timestamp: 5 });
  const i = presenceEvent({ eventType: 'Interval', channelType: 2, channelName: 's', publisher: '', stateChanged: {}, interval: { join: ['a', 'b'], leave: [], timeout: ['c'], userStateList: [{ userId: 'a', states: { k: 'v' } }] }, snapshot: [], timestamp: 1 });
  assert.equal(i.eventType, 'INTERVAL');
  assert.equal(i.channelType, 'STREAM');
  assert.deepEqual(i.interval.join, { users: ['a', 'b'], userCount: 2 });
  assert.deepEqual(i.interval.userStateList, [{ userId: 'a', states: { k: 'v' }, statesCount: 1 }]);
  assert.deepEqual(storageData({ majorRevision: 7, items: [{ key: 'k', value: 'v', revision: 3, updated: 9, authorUserId: 'al' }] }),
    { totalCount: 1, majorRevision: 7, metadata: { k: { value: 'v', revision: 3, updated: 9, authorUid: 'al' } } });
  // Snapshot parts are joined: presence lists appended, topic publishers merged by topic.
  const joined = joinParts(
    [{ kind: 'Presence', eventType: 'Snapshot', channelType: 1, channelName: 'r', publisher: '', stateChanged: {}, interval: null, snapshot: [{ userId: 'a', states: {} }], timestamp: 1 }],
    { kind: 'Presence', eventType: 'Snapshot', channelType: 1, channelName: 'r', publisher: '', stateChanged: {}, interval: null, snapshot: [{ userId: 'b', states: {} }], timestamp: 1 },
  );
  assert.deepEqual(presenceEvent(joined).snapshot.map((u) => u.userId), ['a', 'b']);
  const topics = joinParts(
    [{ kind: 'Topic', eventType: 'Snapshot', channelName: 's', publisher: '', topicInfos: [{ topicName: 't', publishers: [{ userId: 'a', meta: '' }] }], timestamp: 1 }],
    { kind: 'Topic', eventType: 'Snapshot', channelName: 's', publisher: '', topicInfos: [{ topicName: 't', publishers: [{ userId: 'b', meta: 'm' }] }, { topicName: 'u', publishers: [] }], timestamp: 1 },
  );
  const t = topicEvent(topics);
  assert.equal(t.totalTopics, 2);
  assert.deepEqual(t.topicInfos[0], { topicName: 't', publishers: [{ publisherUserId: 'a', publisherMeta: '' }, { publisherUserId: 'b', publisherMeta: 'm' }], totalPublisher: 2 });
});

/** Opens a sealed payload with node:crypto, independently of the SDK: the layout of docs/protocol.md §5.11. */
function openWithNode(bits, key, salt, sealed) {
  const padded = Buffer.alloc(32);
  Buffer.from(salt).copy(padded);
  const k = Buffer.from(crypto.hkdfSync('sha256', Buffer.from(key, 'utf8'), padded, Buffer.from(`rtm e2e v1 AES-${bits}-GCM`), bits / 8));
  assert.equal(sealed[0], 1, 'layout version');
  const decipher = crypto.createDecipheriv(`aes-${bits}-gcm`, k, sealed.subarray(2, 14));
  decipher.setAAD(sealed.subarray(0, 2));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  return { kind: sealed[1], plain: Buffer.concat([decipher.update(sealed.subarray(14, sealed.length - 16)), decipher.final()]) };
}

test('encryption: the layout and key derivation of rtm-client, checked with node:crypto', async () => {
  for (const [mode, bits] of [['AES_128_GCM', 128], ['AES_256_GCM', 256]]) {
    const salt = Uint8Array.from({ length: 20 }, (_, i) => i * 7);
    const cipher = Cipher.from(mode, 'correct horse', salt);
    const text = await cipher.seal({ kind: 'Text', value: 'héllo' });
    assert.equal(text.kind, 'Encrypted');
    assert.equal(text.value.length, 2 + 12 + Buffer.byteLength('héllo') + 16);
    const opened = openWithNode(bits, 'correct horse', salt, Buffer.from(text.value));
    assert.equal(opened.kind, 0);
    assert.equal(opened.plain.toString('utf8'), 'héllo');
    const bin = await cipher.seal({ kind: 'Binary', value: Uint8Array.of(1, 2, 3) });
    assert.deepEqual([...openWithNode(bits, 'correct horse', salt, Buffer.from(bin.value)).plain], [1, 2, 3]);
    assert.deepEqual(await cipher.open(text), { kind: 'Text', value: 'héllo' });
    assert.deepEqual(await cipher.open(bin), { kind: 'Binary', value: Uint8Array.of(1, 2, 3) });
    // Another key, a damaged byte, another layout version: still sealed, never plain text.
    assert.equal((await Cipher.from(mode, 'other', salt).open(text)).kind, 'Encrypted');
    const damaged = Uint8Array.from(text.value);
    damaged[20] ^= 1;
    assert.equal((await cipher.open({ kind: 'Encrypted', value: damaged })).kind, 'Encrypted');
    const v2 = Uint8Array.from(text.value);
    v2[0] = 2;
    assert.equal((await cipher.open({ kind: 'Encrypted', value: v2 })).kind, 'Encrypted');
    assert.equal((await cipher.open({ kind: 'Encrypted', value: new Uint8Array(3) })).kind, 'Encrypted');
  }
});

test('the script bundle loads and makes a client in a context without any browser or Node global', () => {
  const file = path.join(ROOT, 'dist', 'rtm-sdk.iife.min.js');
  const context = vm.createContext({});
  vm.runInContext(fs.readFileSync(file, 'utf8'), context);
  const names = vm.runInContext('Object.keys(AgoraRTM).sort().join(",")', context);
  assert.equal(names, 'BUILD,RTM,RTMBaseError,VERSION,constantsType,getParameter,setArea,setParameter');
  assert.equal(vm.runInContext(`new AgoraRTM.RTM('app', 'u', { privateConfig: { serviceType: ['MESSAGE'], accessPointHosts: ['ws://h/rtm'] } }).presence !== undefined`, context), true);
  assert.equal(vm.runInContext('AgoraRTM.constantsType.ChannelTypeEnum.USER', context), 3);
});

test('a metadata key or state key named __proto__ is an ordinary key', () => {
  const data = storageData({ majorRevision: 1, items: [{ key: '__proto__', value: 'v', revision: 2, updated: 3, authorUserId: 'x' }, { key: 'k', value: 'w', revision: 1, updated: 0, authorUserId: '' }] });
  assert.deepEqual(Object.keys(data.metadata), ['__proto__', 'k']);
  assert.equal(Object.getPrototypeOf(data.metadata), Object.prototype);
  assert.equal(data.metadata.value, undefined, 'nothing reachable through the prototype');
  assert.equal(data.totalCount, 2);
  const p = presenceEvent({ eventType: 'RemoteStateChanged', channelType: 1, channelName: 'r', publisher: 'b', stateChanged: JSON.parse('{"__proto__":"x"}'), interval: null, snapshot: [], timestamp: 1 });
  assert.deepEqual(Object.keys(p.stateChanged), ['__proto__']);
});
