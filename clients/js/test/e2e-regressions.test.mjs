// Regression tests for defects a review of the SDK found (each failed before its fix):
// events held before CONNECTED counted on the wrong lane over WebSocket; no acknowledgement
// every 256 KiB (a prompt reader kicked as a slow consumer); login, logout, login in a row
// ending FAILED; an acquire with retry given up after the request timeout while the server
// still granted the lock; a new login whose connection broke while it restored the channels
// later taken for a resume of a session without them.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { Lanes } from '../dist/esm/connection.js';
import { Clients, DEADLINE_MS, nextEvent, noEvent, record, startRelay, startServer, withDeadline } from './support/server.mjs';

/** The lane of a channel (docs/protocol.md §1.2: FNV-1a 32 mod 16 lanes). */
function laneOf(name) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h % 16;
}

/** `Request::Login`'s variant index (docs/protocol.md §4.2). */
const LOGIN = 0;

/**
 * The request kinds (variant indexes of `Request`) in a chunk of client-to-server WebSocket
 * bytes: each frame is a small masked binary message holding a `ClientMsg`; `Request` is tag 1,
 * then the id (a varint), then the request's variant.
 */
function requestKinds(chunk) {
  const kinds = [];
  let i = 0;
  while (i + 6 <= chunk.length && (chunk[i + 1] & 0x7f) < 126) {
    const len = chunk[i + 1] & 0x7f;
    const mask = chunk.subarray(i + 2, i + 6);
    const body = Buffer.from(chunk.subarray(i + 6, i + 6 + len)).map((b, k) => b ^ mask[k % 4]);
    if (body[0] === 1) {
      let j = 1;
      while (j < body.length && body[j] & 0x80) j += 1;
      if (j + 1 < body.length) kinds.push(body[j + 1]);
    }
    i += 6 + len;
  }
  return kinds;
}

let server;
before(async () => {
  server = await startServer({
    config: `[connection]\nmax_session_bytes = 4194304\n[[apps]]\napp_id = "regapp"\n[apps.limits]\npublish_rate = 1000\npresence_debounce_ms = 0\n`,
  });
});
after(async () => {
  await server?.stop();
});

test('events resent after a resume over WebSocket are counted on their own lanes', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  const relay = await startRelay(server.tcpPort);
  // Find the Lanes object of the subscriber's session as it queues its events.
  const seen = new Set();
  const queue = Lanes.prototype.queue;
  Lanes.prototype.queue = function (lane, work) {
    seen.add(this);
    return queue.call(this, lane, work);
  };
  try {
    const a = 'laneA';
    let b = 'laneB';
    for (let i = 0; laneOf(a) === laneOf(b); i++) b = `laneB${i}`;
    const sub = await clients.login('lanesub', {}, { url: relay.url });
    const pub = await clients.login('lanepub');
    const messages = record(sub, 'message');
    await sub.subscribe(a, { withPresence: false });
    await sub.subscribe(b, { withPresence: false });
    const back = nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 30_000);
    relay.cut();
    for (let k = 0; k < 10; k++) {
      await pub.publish(a, `a${k}`);
      await pub.publish(b, `b${k}`);
    }
    assert.equal((await back).isResumed, true);
    await messages.count(20, 30_000);
    const lanes = [...seen].find((l) => l.received[laneOf(a)] > 0 || l.received[laneOf(b)] > 0);
    assert.ok(lanes, 'the session queued its events');
    assert.equal(lanes.received[laneOf(a)], 10, `lane ${laneOf(a)} (channel ${a})`);
    assert.equal(lanes.received[laneOf(b)], 10, `lane ${laneOf(b)} (channel ${b})`);
    for (const ch of [a, b]) {
      assert.deepEqual(messages.events.filter((m) => m.channelName === ch).map((m) => m.message), [...Array(10).keys()].map((k) => `${ch === a ? 'a' : 'b'}${k}`));
    }
  } finally {
    Lanes.prototype.queue = queue;
    await clients.closeAll();
    await relay.close();
  }
});

test('a client that reads promptly acknowledges every 256 KiB and is not taken for a slow consumer', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  try {
    // A long heartbeat: only the byte-based acknowledgements keep the server's bound (4 MiB).
    const sub = await clients.login('bytesub', { heartbeatInterval: 60 });
    const pub = await clients.login('bytepub');
    const channels = ['b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7'];
    for (const c of channels) await sub.subscribe(c, { withPresence: false });
    const links = record(sub, 'linkState');
    const messages = record(sub, 'message');
    const payload = 'x'.repeat(30_000);
    for (let i = 0; i < 30; i++) await Promise.all(channels.map((c) => pub.publish(c, payload)));
    await messages.count(240, 30_000);
    assert.deepEqual(links.events.map((e) => e.currentState), [], 'the link never left CONNECTED');
  } finally {
    await clients.closeAll();
  }
});

test('login, logout and login again in a row leaves the client logged in', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  try {
    const c = clients.make('strictuser');
    const first = c.login().then(() => 'ok', (e) => e.errorCode);
    const out = c.logout().then(() => 'ok', (e) => e.errorCode);
    const second = c.login().then(() => 'ok', (e) => e.errorCode);
    assert.deepEqual([await first, await out, await second], [-10023, 'ok', 'ok']);
    await c.subscribe('strictroom', { withPresence: false });
    const got = nextEvent(c, 'message', (m) => m.message === 'still here');
    await c.publish('strictroom', 'still here');
    await got;
    await noEvent(c, 'linkState', (e) => e.currentState !== 'CONNECTED', 1_500);
  } finally {
    await clients.closeAll();
  }
});

test('an acquire with retry waits past the request timeout until the lock is released', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  try {
    const a = await clients.login('lockholder');
    const b = await clients.login('lockwaiter');
    await a.lock.setLock('lockroom', 'MESSAGE', 'L', { ttl: 30 });
    await a.lock.acquireLock('lockroom', 'MESSAGE', 'L');
    let settled = null;
    const waiting = b.lock.acquireLock('lockroom', 'MESSAGE', 'L', { retry: true }).then(
      () => (settled = 'acquired'),
      (e) => (settled = `rejected ${e.errorCode}`),
    );
    // The SDK's request timeout is 10 s: the acquire must still be waiting after it.
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    assert.equal(settled, null, 'the acquire gave up while the lock was held');
    await a.lock.releaseLock('lockroom', 'MESSAGE', 'L');
    await withDeadline(waiting, DEADLINE_MS, 'the waiting acquire');
    assert.equal(settled, 'acquired');
    const locks = await a.lock.getLock('lockroom', 'MESSAGE');
    assert.equal(locks.lockDetails[0].owner, 'lockwaiter');
  } finally {
    await clients.closeAll();
  }
});

test('a new login cut while it restores the channels is followed by another login, not a resume of it', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  // A relay that can refuse connections, and cut a connection that has sent a Login on the
  // next thing it sends (the restoring Subscribe).
  let mode = 'pass';
  const sockets = new Set();
  const relay = net.createServer((client) => {
    if (mode === 'refuse') return client.destroy();
    const up = net.connect(server.tcpPort, '127.0.0.1');
    sockets.add(client).add(up);
    const kill = () => {
      client.destroy();
      up.destroy();
    };
    for (const s of [client, up]) s.on('error', kill).on('close', kill);
    let loggedIn = false;
    client.on('data', (d) => {
      if (mode === 'cutRestore' && loggedIn) {
        mode = 'pass';
        return kill();
      }
      loggedIn ||= requestKinds(d).includes(LOGIN);
      up.write(d);
    });
    up.on('data', (d) => client.write(d));
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  try {
    const watcher = await clients.login('restorewatch');
    const sub = await clients.login('restoresub', { presenceTimeout: 5 }, { url: `ws://127.0.0.1:${relay.address().port}/rtm` });
    await watcher.subscribe('restoreroom');
    await sub.subscribe('restoreroom');
    // Away longer than the presence timeout: the server ends the session.
    const timedOut = nextEvent(watcher, 'presence', (e) => e.eventType === 'REMOTE_TIMEOUT' && e.publisher === 'restoresub', 30_000);
    mode = 'refuse';
    for (const s of sockets) s.destroy();
    await timedOut;
    // The resume is refused, the new login's connection is cut as it subscribes again.
    mode = 'cutRestore';
    const back = await nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 60_000);
    assert.equal(back.isResumed, false, 'a session without its channels must not be reported as resumed');
    assert.deepEqual(back.unrestoredChannels, []);
    const got = nextEvent(sub, 'message', (m) => m.message === 'are you there');
    await watcher.publish('restoreroom', 'are you there');
    await got;
    const where = await watcher.presence.whereNow('restoresub');
    assert.deepEqual(where.channels.map((c) => c.channelName), ['restoreroom']);
  } finally {
    await clients.closeAll();
    relay.close();
    for (const s of sockets) s.destroy();
  }
});

test('a call without an answer in time fails with its own timeout code', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  const relay = await startRelay(server.tcpPort);
  try {
    const c = await clients.login('timeoutuser', {}, { url: relay.url });
    // The server answers, but the relay keeps the answers from the client.
    relay.pause(true);
    const [subscribe, metadata] = await Promise.all([
      c.subscribe('timeoutroom').then(() => null, (e) => e),
      c.storage.getChannelMetadata('timeoutroom', 'MESSAGE').then(() => null, (e) => e),
    ]);
    assert.equal(subscribe?.errorCode, -11019, 'CHANNEL_SUBSCRIBE_TIMEOUT');
    assert.equal(metadata?.errorCode, -12018, 'STORAGE_OPERATION_TIMEOUT');
  } finally {
    relay.pause(false);
    await clients.closeAll();
    await relay.close();
  }
});

test('messages queued before the server ends a session still reach the application', async () => {
  const clients = new Clients(server.wsUrl, 'regapp');
  const crypto = { encryptionMode: 'AES_256_GCM', cipherKey: 'queued before the end', salt: new Uint8Array(32) };
  try {
    const first = await clients.login('endeduser', crypto);
    const pub = await clients.login('endedpub', crypto);
    await first.subscribe('endedroom', { withPresence: false });
    const messages = record(first, 'message');
    const failed = nextEvent(first, 'linkState', (e) => e.currentState === 'FAILED');
    // Each answer comes once the message is in the subscriber's queue, before the new login
    // queues the end of its session; their decryption is still under way when it ends.
    await Promise.all([...Array(50).keys()].map((i) => pub.publish('endedroom', `m${i}`)));
    await clients.login('endeduser');
    assert.equal((await failed).reasonCode, 'SAME_UID_LOGIN');
    await messages.count(50);
    assert.deepEqual(messages.events.map((m) => m.message), [...Array(50).keys()].map((i) => `m${i}`));
  } finally {
    await clients.closeAll();
  }
});
