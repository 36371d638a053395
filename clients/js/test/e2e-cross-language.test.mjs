// The JavaScript SDK and the Rust client (rtm-client, driven through the js_peer example over
// JSON lines) in the same channels of one rtm-server: messages both ways (text and binary, to
// channels, users and topics), presence, metadata and lock events both ways, and end-to-end
// encrypted messages both ways with the same key and salt (docs/protocol.md §5.11).
//
//   JS_PEER_BIN  the Rust peer (default <repo>/target/debug/examples/js_peer; build it with
//                `cargo build -p rtm-testkit --example js_peer`)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

import { Clients, REPO, bytes, brief, nextEvent, record, startServer, uniq, waitFor, withDeadline } from './support/server.mjs';

const PEER_BIN = process.env.JS_PEER_BIN || path.join(REPO, 'target', 'debug', 'examples', 'js_peer');
const APP = 'crossapp';
const T = { timeout: 30_000 };

const CONFIG = `
[[apps]]
app_id = "${APP}"
[apps.limits]
presence_debounce_ms = 0
storage_rate = 500
lock_rate = 500
publish_rate = 1000
`;

const b64 = (u8) => Buffer.from(u8).toString('base64');
const fromB64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

/** A running js_peer: commands in, replies and events out. */
class RustPeer {
  #child;
  #pending = new Map();
  #nextId = 1;
  #listeners = new Set();
  #exited = null;
  #stderr = '';
  /** Every event line, in arrival order. */
  events = [];

  static async start(server, userId, { transport = 'quic', extraArgs = [] } = {}) {
    const args = ['--app-id', APP, '--user-id', userId, '--server', server.quicAddr, '--cert', server.certPath, '--transport', transport];
    if (transport === 'websocket') args.push('--ws-addr', `127.0.0.1:${server.tcpPort}`);
    args.push(...extraArgs);
    const peer = new RustPeer(spawn(PEER_BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] }), userId);
    await peer.#ready;
    return peer;
  }

  constructor(child, userId) {
    this.userId = userId;
    this.#child = child;
    child.stderr.on('data', (c) => { this.#stderr = (this.#stderr + c).slice(-8000); });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
      this.#exited = { code, signal };
      for (const [, p] of this.#pending) p.reject(new Error(`js_peer ${userId} exited ${JSON.stringify(this.#exited)}: ${this.#stderr}`));
      this.#pending.clear();
      resolve(this.#exited);
    }));
    this.exited = exited;
    let readyResolve;
    let readyReject;
    this.#ready = withDeadline(new Promise((res, rej) => { readyResolve = res; readyReject = rej; }), 10_000, `js_peer ${userId} to be ready`);
    exited.then((e) => readyReject(new Error(`js_peer ${userId} exited before it was ready ${JSON.stringify(e)}: ${this.#stderr}`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if ('ready' in msg) {
        if (msg.ready) readyResolve();
        else readyReject(new Error(`js_peer ${userId} refused its configuration: ${line}`));
      } else if ('event' in msg) {
        this.events.push(msg);
        for (const l of [...this.#listeners]) l(msg);
      } else if ('id' in msg) {
        const p = this.#pending.get(msg.id);
        if (p) {
          this.#pending.delete(msg.id);
          p.resolve(msg);
        }
      }
    });
  }

  #ready;

  /** Sends a command; resolves with its reply line (ok or not). */
  send(op, fields = {}, ms = 10_000) {
    if (this.#exited) return Promise.reject(new Error(`js_peer ${this.userId} has exited`));
    const id = this.#nextId++;
    const reply = new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.#child.stdin.write(`${JSON.stringify({ id, op, ...fields })}\n`);
    return withDeadline(reply, ms, `js_peer ${this.userId} to answer ${op}`);
  }

  /** Sends a command that must succeed; resolves with its reply. */
  async ok(op, fields = {}, ms) {
    const r = await this.send(op, fields, ms);
    if (!r.ok) throw new Error(`js_peer ${this.userId} ${op} ${JSON.stringify(fields).slice(0, 200)} failed: ${JSON.stringify(r)}`);
    return r;
  }

  /** The next event of kind `name` matching `predicate` (from the call on). */
  nextEvent(name, predicate = () => true, ms = 10_000) {
    let listener;
    const seen = [];
    return withDeadline(new Promise((resolve) => {
      listener = (e) => {
        if (e.event !== name) return;
        seen.push(e);
        if (predicate(e)) resolve(e);
      };
      this.#listeners.add(listener);
    }), ms, `a "${name}" event of js_peer ${this.userId} (saw ${seen.length}: ${brief(seen.slice(-5))})`)
      .finally(() => this.#listeners.delete(listener));
  }

  /** Waits until `check(events of kind name)` is truthy. */
  until(name, what, check, ms = 10_000) {
    return waitFor(`${what} at js_peer ${this.userId}`, () => check(this.events.filter((e) => e.event === name)), ms);
  }

  /** Logs out and exits; kills it by its PID if it does not. */
  async stop() {
    if (this.#exited) return;
    this.#child.stdin.end(`${JSON.stringify({ id: this.#nextId++, op: 'exit' })}\n`);
    const done = await withDeadline(this.exited, 5_000, `js_peer ${this.userId} to exit`).catch(() => null);
    if (!done && this.#child.pid) {
      try {
        process.kill(this.#child.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await withDeadline(this.exited, 5_000, `js_peer ${this.userId} to die`).catch(() => undefined);
    }
  }
}

describe('the JavaScript SDK and the Rust client together (e2e)', { skip: fs.existsSync(PEER_BIN) ? false : `js_peer not built (${PEER_BIN}): cargo build -p rtm-testkit --example js_peer` }, () => {
  let server;
  let clients;
  const peers = [];

  before(async () => {
    server = await startServer({ config: CONFIG });
    clients = new Clients(server.wsUrl, APP);
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await clients?.closeAll();
    await server?.stop();
  });

  async function peer(userId, options) {
    const p = await RustPeer.start(server, userId, options);
    peers.push(p);
    await p.ok('login');
    return p;
  }

  for (const transport of ['quic', 'websocket']) {
    test(`messages both ways, text and binary, channel and user (Rust over ${transport})`, T, async () => {
      const ch = uniq('x-room');
      const js = await clients.login(uniq('js'));
      const rs = await peer(uniq('rs'), { transport });
      await js.subscribe(ch);
      await rs.ok('subscribe', { channel: ch });

      // Rust → JS: text with a custom type, then bytes.
      const atJs = record(js, 'message', (m) => m.channelName === ch && m.publisher === rs.userId);
      const BIN = bytes(500, 0x33);
      await rs.ok('publish', { channel: ch, message: 'from rust ✓', customType: 'rt' });
      await rs.ok('publish', { channel: ch, messageBase64: b64(BIN) });
      await atJs.count(2);
      assert.equal(atJs.events[0].message, 'from rust ✓');
      assert.equal(atJs.events[0].messageType, 'STRING');
      assert.equal(atJs.events[0].customType, 'rt');
      assert.equal(atJs.events[0].channelType, 'MESSAGE');
      assert.equal(atJs.events[1].messageType, 'BINARY');
      assert.deepEqual(atJs.events[1].message, BIN);

      // JS → Rust.
      await js.publish(ch, 'from js ✓', { customType: 'jt' });
      await js.publish(ch, Uint8Array.of(0, 255, 1, 254));
      await rs.until('message', 'two messages from js', (ev) => ev.filter((m) => m.channelName === ch && m.publisher === js.userId).length >= 2);
      const fromJs = rs.events.filter((e) => e.event === 'message' && e.channelName === ch && e.publisher === js.userId);
      assert.equal(fromJs[0].message, 'from js ✓');
      assert.equal(fromJs[0].messageType, 'STRING');
      assert.equal(fromJs[0].customType, 'jt');
      assert.deepEqual(fromJs[1].message, { base64: b64(Uint8Array.of(0, 255, 1, 254)) });
      assert.equal(fromJs[1].messageType, 'BINARY');

      // User messages both ways.
      const dmJs = nextEvent(js, 'message', (m) => m.channelType === 'USER' && m.publisher === rs.userId);
      await rs.ok('publish', { channel: js.userId, channelType: 'USER', messageBase64: b64(Uint8Array.of(9, 8, 7)) });
      const d = await dmJs;
      assert.equal(d.channelName, rs.userId);
      assert.deepEqual([...d.message], [9, 8, 7]);
      const dmRs = rs.nextEvent('message', (m) => m.channelType === 'USER' && m.publisher === js.userId);
      await js.publish(rs.userId, 'dm from js', { channelType: 'USER' });
      const r = await dmRs;
      assert.equal(r.channelName, js.userId);
      assert.equal(r.message, 'dm from js');
      atJs.stop();
    });
  }

  test('presence events both ways: joins, states, leaves; whoNow agrees', T, async () => {
    const ch = uniq('x-pres');
    const js = await clients.login(uniq('jsp'));
    const rs = await peer(uniq('rsp'));
    await js.subscribe(ch);

    const joinAtJs = nextEvent(js, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_JOIN' && e.publisher === rs.userId);
    const snapAtRs = rs.nextEvent('presence', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await rs.ok('subscribe', { channel: ch });
    await joinAtJs;
    assert.deepEqual((await snapAtRs).snapshot.map((u) => u.userId), [js.userId, rs.userId].sort());

    const stateAtJs = nextEvent(js, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await rs.ok('setState', { channel: ch, states: { lang: 'rust' } });
    assert.deepEqual((await stateAtJs).stateChanged, { lang: 'rust' });
    const stateAtRs = rs.nextEvent('presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await js.presence.setState(ch, 'MESSAGE', { lang: 'js' });
    const sr = await stateAtRs;
    assert.equal(sr.publisher, js.userId);
    assert.deepEqual(sr.stateChanged, { lang: 'js' });

    const who = await rs.ok('whoNow', { channel: ch, includeState: true });
    assert.equal(who.totalOccupancy, 2);
    assert.deepEqual(Object.fromEntries(who.occupants.map((o) => [o.userId, o.states])), { [js.userId]: { lang: 'js' }, [rs.userId]: { lang: 'rust' } });
    assert.deepEqual((await js.presence.getState(rs.userId, ch, 'MESSAGE')).states, { lang: 'rust' });

    const leaveAtRs = rs.nextEvent('presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_LEAVE');
    await js.unsubscribe(ch);
    assert.equal((await leaveAtRs).publisher, js.userId);
    await js.subscribe(ch);
    const leaveAtJs = nextEvent(js, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_LEAVE');
    await rs.ok('unsubscribe', { channel: ch });
    assert.equal((await leaveAtJs).publisher, rs.userId);
  });

  test('metadata and lock events both ways', T, async () => {
    const ch = uniq('x-meta');
    const js = await clients.login(uniq('jsm'));
    const rs = await peer(uniq('rsm'));
    await js.subscribe(ch, { withMetadata: true, withLock: true });
    await rs.ok('subscribe', { channel: ch, withMetadata: true, withLock: true });

    const atJs = nextEvent(js, 'storage', (e) => e.channelName === ch && e.eventType === 'UPDATE');
    await rs.ok('setChannelMetadata', { channel: ch, items: [{ key: 'owner', value: 'rust' }], addUserId: true });
    const e1 = await atJs;
    assert.equal(e1.publisher, rs.userId);
    assert.equal(e1.data.metadata.owner.value, 'rust');
    assert.equal(e1.data.metadata.owner.authorUid, rs.userId);
    const rev = e1.data.metadata.owner.revision;

    const atRs = rs.nextEvent('storage', (e) => e.channelName === ch && e.eventType === 'UPDATE' && e.publisher === js.userId);
    await js.storage.updateChannelMetadata(ch, 'MESSAGE', [{ key: 'owner', value: 'js', revision: rev }]);
    const e2 = await atRs;
    assert.equal(e2.storageType, 'CHANNEL');
    assert.equal(e2.data.metadata.owner.value, 'js');
    assert.ok(e2.data.metadata.owner.revision > rev);
    const got = await rs.ok('getChannelMetadata', { channel: ch });
    assert.equal(got.metadata.owner.value, 'js');
    assert.equal(got.majorRevision, (await js.storage.getChannelMetadata(ch, 'MESSAGE')).majorRevision);

    // User metadata: Rust watches the JS user's set, and the other way round.
    await rs.ok('subscribeUserMetadata', { userId: js.userId });
    const userAtRs = rs.nextEvent('storage', (e) => e.storageType === 'USER' && e.channelName === js.userId && e.eventType === 'UPDATE');
    await js.storage.setUserMetadata([{ key: 'status', value: 'busy' }]);
    assert.equal((await userAtRs).data.metadata.status.value, 'busy');
    await js.storage.subscribeUserMetadata(rs.userId);
    const userAtJs = nextEvent(js, 'storage', (e) => e.storageType === 'USER' && e.channelName === rs.userId && e.eventType === 'UPDATE');
    await rs.ok('setUserMetadata', { items: [{ key: 'status', value: 'idle' }] });
    assert.equal((await userAtJs).data.metadata.status.value, 'idle');

    // Locks.
    const lockAtJs = record(js, 'lock', (e) => e.channelName === ch && e.eventType !== 'SNAPSHOT');
    await rs.ok('setLock', { channel: ch, lockName: 'baton', ttl: 20 });
    await rs.ok('acquireLock', { channel: ch, lockName: 'baton' });
    await lockAtJs.count(2);
    assert.deepEqual(lockAtJs.events.map((e) => [e.eventType, e.owner, e.publisher]), [['SET', '', rs.userId], ['ACQUIRED', rs.userId, rs.userId]]);
    const waiting = js.lock.acquireLock(ch, 'MESSAGE', 'baton', { retry: true });
    const toJsAtRs = rs.nextEvent('lock', (e) => e.channelName === ch && e.eventType === 'ACQUIRED' && e.owner === js.userId);
    await rs.ok('releaseLock', { channel: ch, lockName: 'baton' });
    await waiting;
    await toJsAtRs;
    const locks = await rs.ok('getLocks', { channel: ch });
    assert.deepEqual(locks.lockDetails, [{ lockName: 'baton', owner: js.userId, ttl: 20 }]);
    lockAtJs.stop();
  });

  test('topic messages and topic events both ways in a stream channel', T, async () => {
    const name = uniq('x-stream');
    const js = await clients.login(uniq('jst'));
    const rs = await peer(uniq('rst'));
    const sj = js.createStreamChannel(name);
    await sj.join();
    const rsJoins = nextEvent(js, 'topic', (e) => e.channelName === name && e.eventType === 'REMOTE_JOIN' && e.publisher === rs.userId);
    await rs.ok('joinStream', { channel: name });
    await rs.ok('joinTopic', { channel: name, topic: 'rust-t' });
    assert.deepEqual((await rsJoins).topicInfos.map((t) => t.topicName), ['rust-t']);

    await sj.subscribeTopic('rust-t', { users: [rs.userId] });
    const atJs = nextEvent(js, 'message', (m) => m.channelName === name);
    await rs.ok('publishTopic', { channel: name, topic: 'rust-t', messageBase64: b64(bytes(64)) });
    const m = await atJs;
    assert.equal(m.channelType, 'STREAM');
    assert.equal(m.topicName, 'rust-t');
    assert.deepEqual(m.message, bytes(64));

    const jsJoins = rs.nextEvent('topic', (e) => e.channelName === name && e.eventType === 'REMOTE_JOIN' && e.publisher === js.userId);
    await sj.joinTopic('js-t', { meta: 'js meta' });
    const tj = await jsJoins;
    assert.deepEqual(tj.topicInfos, [{ topicName: 'js-t', totalPublisher: 1, publishers: [{ publisherUserId: js.userId, publisherMeta: 'js meta' }] }]);
    const sub = await rs.ok('subscribeTopic', { channel: name, topic: 'js-t', users: [js.userId] });
    assert.deepEqual(sub.succeedUsers, [js.userId]);
    const atRs = rs.nextEvent('message', (e) => e.channelName === name);
    await sj.publishTopicMessage('js-t', 'topic from js', { customType: 'tt' });
    const r = await atRs;
    assert.equal(r.channelType, 'STREAM');
    assert.equal(r.topicName, 'js-t');
    assert.equal(r.message, 'topic from js');
    assert.equal(r.customType, 'tt');

    const leftAtRs = rs.nextEvent('topic', (e) => e.channelName === name && e.eventType === 'REMOTE_LEAVE');
    await sj.leave();
    assert.deepEqual((await leftAtRs).topicInfos.map((t) => t.topicName), ['js-t']);
  });

  test('end-to-end encryption both ways: JS AES_256_GCM ↔ Rust aes256gcm, JS AES_128_GCM ↔ Rust aes128gcm', T, async () => {
    const KEY = 'cross-language-key-0123456789';
    const SALT = bytes(32, 0x70);
    const salt = Buffer.from(SALT).toString('hex');
    for (const [jsMode, rsMode] of [['AES_256_GCM', 'aes256gcm'], ['AES_128_GCM', 'aes128gcm']]) {
      const ch = uniq('x-enc');
      const js = await clients.login(uniq('jse'), { encryptionMode: jsMode, cipherKey: KEY, salt: SALT });
      const rs = await peer(uniq('rse'), { extraArgs: ['--encryption-mode', rsMode, '--cipher-key', KEY, '--salt-hex', salt] });
      const rsPlain = await peer(uniq('rsn'));
      const jsPlain = await clients.login(uniq('jsn'));
      await js.subscribe(ch);
      await jsPlain.subscribe(ch);
      await rs.ok('subscribe', { channel: ch });
      await rsPlain.ok('subscribe', { channel: ch });

      // Rust seals, JS opens.
      const atJs = record(js, 'message', (m) => m.channelName === ch && m.publisher === rs.userId);
      const atJsPlain = record(jsPlain, 'message', (m) => m.channelName === ch && m.publisher === rs.userId);
      await rs.ok('publish', { channel: ch, message: `sealed by rust (${rsMode})` });
      await rs.ok('publish', { channel: ch, messageBase64: b64(bytes(40, 1)) });
      await atJs.count(2);
      assert.equal(atJs.events[0].message, `sealed by rust (${rsMode})`);
      assert.equal(atJs.events[0].messageType, 'STRING');
      assert.deepEqual(atJs.events[1].message, bytes(40, 1));
      assert.equal(atJs.events[1].messageType, 'BINARY');
      await atJsPlain.count(2);
      assert.equal(atJsPlain.events[0].messageType, 'BINARY', 'without the key: the sealed bytes');
      assert.equal(atJsPlain.events[0].message.length, `sealed by rust (${rsMode})`.length + 30);

      // JS seals, Rust opens; a Rust client without the key gets it still encrypted.
      const plainSeen = rsPlain.nextEvent('message', (e) => e.channelName === ch && e.publisher === js.userId);
      await js.publish(ch, `sealed by js (${jsMode})`);
      await js.publish(ch, bytes(33, 2));
      await rs.until('message', 'two sealed messages from js', (ev) => ev.filter((m) => m.channelName === ch && m.publisher === js.userId).length >= 2);
      const fromJs = rs.events.filter((e) => e.event === 'message' && e.channelName === ch && e.publisher === js.userId);
      assert.equal(fromJs[0].message, `sealed by js (${jsMode})`);
      assert.equal(fromJs[0].messageType, 'STRING');
      assert.deepEqual(fromJs[1].message, { base64: b64(bytes(33, 2)) });
      const sealed = (await plainSeen).message;
      assert.ok(sealed && typeof sealed.encrypted === 'string', `a Rust client without the key got ${JSON.stringify(sealed)}`);
      const raw = fromB64(sealed.encrypted);
      assert.equal(raw.length, `sealed by js (${jsMode})`.length + 30);
      assert.deepEqual([raw[0], raw[1]], [1, 0]);

      // User messages, sealed, both ways.
      const dmJs = nextEvent(js, 'message', (m) => m.channelType === 'USER' && m.publisher === rs.userId);
      await rs.ok('publish', { channel: js.userId, channelType: 'USER', message: 'sealed dm from rust' });
      assert.equal((await dmJs).message, 'sealed dm from rust');
      const dmRs = rs.nextEvent('message', (e) => e.channelType === 'USER' && e.publisher === js.userId);
      await js.publish(rs.userId, 'sealed dm from js', { channelType: 'USER' });
      assert.equal((await dmRs).message, 'sealed dm from js');
      atJs.stop();
      atJsPlain.stop();
    }
  });
});
