// End to end against a real rtm-server over WebSocket: token logins and their errors, the
// token expiry warning and renewal, resume after a cut connection (through a TCP relay), a new
// login when the session is gone, same-user login elsewhere, and end-to-end encryption
// (docs/protocol.md §5.1, §5.6, §5.11; docs/operators.md "Tokens").

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  AgoraRTM,
  Clients,
  bytes,
  containsBytes,
  makeToken,
  nextEvent,
  noEvent,
  record,
  rejection,
  startRelay,
  startServer,
  uniq,
  waitFor,
  assertRtmError,
} from './support/server.mjs';

// A secured app (App Certificate: logins need a token) and an open one.
const APP = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
const CERT = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const OTHER_APP = 'b1b2c3d4e5f60718293a4b5c6d7e8f90';
const OTHER_CERT = '1f1e2d3c4b5a69788796a5b4c3d2e1f0';

// token_warning_secs = 4: a token made to last 6 s is warned about ~2 s after it is made.
const CONFIG = `
[connection]
token_warning_secs = 4

[[apps]]
app_id = "${APP}"
app_certificate = "${CERT}"

[[apps]]
app_id = "${OTHER_APP}"
app_certificate = "${OTHER_CERT}"

[[apps]]
app_id = "openapp"
[apps.limits]
publish_rate = 1000
presence_debounce_ms = 0
history_max_messages = 200
`;


const token = (userId, expire = 3600, appId = APP, certificate = CERT) => makeToken({ appId, certificate, userId, expire });

describe('sessions (e2e)', () => {
  let server;
  let clients;
  const relays = [];

  before(async () => {
    server = await startServer({ config: CONFIG });
    clients = new Clients(server.wsUrl, 'openapp');
  });

  after(async () => {
    await clients?.closeAll();
    for (const r of relays) await r.close();
    await server?.stop();
  });

  async function relay() {
    const r = await startRelay(server.tcpPort);
    relays.push(r);
    return r;
  }

  // ---- tokens --------------------------------------------------------------------------------

  test('token login: a valid token (at login or in the config) works; bad ones are refused with their codes', { timeout: 20_000 }, async () => {
    const u = uniq('tok');
    const ok = await clients.login(u, {}, { appId: APP }, { token: token(u) });
    await ok.subscribe('secured');
    const v = uniq('tokcfg');
    await clients.login(v, { token: token(v) }, { appId: APP });

    const refused = async (userId, tok, code, reasonCode, appId = APP) => {
      const c = clients.make(userId, {}, { appId });
      const failed = nextEvent(c, 'linkState', (e) => e.currentState === 'FAILED');
      assertRtmError(await rejection(c.login(tok === undefined ? undefined : { token: tok }), `login with ${tok}`), code, 'login');
      const f = await failed;
      assert.equal(f.reasonCode, reasonCode);
      assert.equal(f.previousState, 'CONNECTING');
    };
    const w = uniq('tokbad');
    await refused(w, undefined, -10005, 'INVALID_TOKEN');
    await refused(w, 'garbage', -10005, 'INVALID_TOKEN');
    await refused(w, `${token(w).slice(0, -4)}AAAA`, -10005, 'INVALID_TOKEN');
    await refused(w, token(uniq('someoneelse')), -10005, 'INVALID_TOKEN');
    await refused(w, token(w, 3600, APP, OTHER_CERT), -10005, 'INVALID_TOKEN');
    await refused(w, token(w, 3600, OTHER_APP, OTHER_CERT), -10016, 'LOGIN_REJECTED');
    await refused(w, token(w, 0), -10009, 'TOKEN_EXPIRED');
  });

  test('stream channels of a secured app need an RTC token for the channel', { timeout: 20_000 }, async () => {
    const u = uniq('rtc');
    const c = await clients.login(u, {}, { appId: APP }, { token: token(u) });
    const name = uniq('secure-stream');
    const s = c.createStreamChannel(name);
    assertRtmError(await rejection(s.join()), -10005, 'join');
    assertRtmError(await rejection(s.join({ token: makeToken({ appId: APP, certificate: CERT, userId: u, channel: 'another' }) })), -10005, 'join');
    await s.join({ token: makeToken({ appId: APP, certificate: CERT, userId: u, channel: name }) });
    await c.renewToken(makeToken({ appId: APP, certificate: CERT, userId: '', channel: name }), { channelName: name });
    await s.joinTopic('t');
    await s.leave();
  });

  describe('token expiry', { concurrency: true }, () => {
    test('tokenPrivilegeWillExpire before the end; renewToken keeps the session past it', { timeout: 20_000 }, async () => {
      const u = uniq('renew');
      const madeAt = Math.floor(Date.now() / 1000);
      const c = clients.make(u, {}, { appId: APP });
      const links = record(c, 'linkState');
      const warned = nextEvent(c, 'tokenPrivilegeWillExpire', () => true, 8_000);
      const tokenEvent = nextEvent(c, 'token', (e) => e.eventType === 'WILL_EXPIRE', 8_000);
      await c.login({ token: token(u, 6) });
      assert.equal(await warned, '', 'the login token warning names no channel');
      const te = await tokenEvent;
      assert.deepEqual(te.affectedResources.messageChannels, []);

      assertRtmError(await rejection(c.renewToken('garbage')), -10005, 'renewToken');
      assertRtmError(await rejection(c.renewToken(token(uniq('other')))), -10005, 'renewToken');
      const r = await c.renewToken(token(u, 3600));
      assert.equal(typeof r.timestamp, 'number');

      // Past the first token's end (at most madeAt + 1 + 6 s) the session is still there.
      await waitFor('the first token to have ended', () => Date.now() > (madeAt + 8) * 1000, 12_000, 100);
      await c.subscribe('still-here');
      const own = nextEvent(c, 'message', (m) => m.channelName === 'still-here');
      await c.publish('still-here', 'alive');
      await own;
      assert.deepEqual(links.events.map((e) => e.currentState), ['CONNECTING', 'CONNECTED'], 'no link change after the renewal');
      links.stop();
    });

    test('a stream channel token: warned with the channel name; at its end the user leaves that channel only', { timeout: 20_000 }, async () => {
      const u = uniq('chtok');
      const w = uniq('chwatch');
      const name = uniq('expiring-stream');
      const rtc = (userId, expire) => makeToken({ appId: APP, certificate: CERT, userId, channel: name, expire });
      const c = await clients.login(u, {}, { appId: APP }, { token: token(u) });
      const watcher = await clients.login(w, {}, { appId: APP }, { token: token(w) });
      await watcher.createStreamChannel(name).join({ token: rtc(w, 3600) });
      const links = record(c, 'linkState');
      const warned = nextEvent(c, 'tokenPrivilegeWillExpire', (ch) => ch === name, 8_000);
      const left = nextEvent(c, 'linkState', (e) => e.serviceType === 'STREAM' && e.currentState === 'FAILED', 12_000);
      const leaveSeen = nextEvent(watcher, 'presence', (e) => e.channelName === name && e.eventType === 'REMOTE_LEAVE' && e.publisher === u, 12_000);
      const s = c.createStreamChannel(name);
      await s.join({ token: rtc(u, 6) });
      await s.joinTopic('t');
      assert.equal(await warned, name);
      const l = await left;
      assert.equal(l.reasonCode, 'TOKEN_EXPIRED');
      assert.deepEqual(l.affectedChannels, [name]);
      await leaveSeen;
      assert.ok(links.events.every((e) => e.serviceType === 'STREAM'), 'the session itself did not change');
      await c.subscribe('still-logged-in');
      assert.equal((await rejection(s.publishTopicMessage('t', 'x'))).errorCode, -11001, 'no longer in the channel');
      links.stop();
    });

    test('a token that ends without renewal: the link goes FAILED with TOKEN_EXPIRED', { timeout: 20_000 }, async () => {
      const u = uniq('expire');
      const c = clients.make(u, {}, { appId: APP });
      const failed = nextEvent(c, 'linkState', (e) => e.currentState === 'FAILED', 10_000);
      await c.login({ token: token(u, 3) });
      await c.subscribe('expiring');
      const f = await failed;
      assert.equal(f.previousState, 'CONNECTED');
      assert.equal(f.operation, 'SERVER_REJECT');
      assert.equal(f.reasonCode, 'TOKEN_EXPIRED');
      assert.deepEqual(f.affectedChannels, ['expiring']);
      assertRtmError(await rejection(c.publish('expiring', 'x')), -10002, 'publish');
      // A new login with a fresh token works.
      await c.login({ token: token(u) });
      await c.logout();
    });
  });

  // ---- resume --------------------------------------------------------------------------------

  test('resume after a cut connection: CONNECTED → DISCONNECTED → CONNECTING → CONNECTED (isResumed), messages of the cut arrive once, in order', { timeout: 25_000 }, async () => {
    const r = await relay();
    const ch = uniq('resume');
    const sname = uniq('resume-stream');
    const sub = await clients.login(uniq('rsub'), {}, { url: r.url });
    const pub = await clients.login(uniq('rpub'));
    await pub.subscribe(ch);
    await sub.subscribe(ch);
    const ss = sub.createStreamChannel(sname);
    const ps = pub.createStreamChannel(sname);
    await ps.join();
    await ss.join();
    await ps.joinTopic('t');
    await ss.subscribeTopic('t', { users: [pub.userId] });

    const links = record(sub, 'linkState');
    const msgs = record(sub, 'message', (m) => m.channelName === ch);
    const topicMsgs = record(sub, 'message', (m) => m.channelName === sname);
    const presenceOfSub = record(pub, 'presence', (e) => e.publisher === sub.userId && e.eventType !== 'REMOTE_STATE_CHANGED');
    await pub.publish(ch, 'before');
    await ps.publishTopicMessage('t', 'topic before');
    await msgs.count(1);
    await topicMsgs.count(1);

    const disconnected = nextEvent(sub, 'linkState', (e) => e.currentState === 'DISCONNECTED');
    const reconnected = nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 20_000);
    assert.equal(r.cut(), 1, 'one connection was relayed');
    const d = await disconnected;
    assert.equal(d.previousState, 'CONNECTED');
    assert.equal(d.reasonCode, 'CONNECTION_ERROR');
    assert.deepEqual([...d.affectedChannels].sort(), [ch, sname].sort());
    // While the link is down, calls fail at once.
    assertRtmError(await rejection(sub.publish(ch, 'x')), -10025, 'publish');

    // Published while the subscriber is away (the first reconnect attempt is 1 to 2 s away).
    let reconnectedYet = false;
    reconnected.then(() => { reconnectedYet = true; }, () => undefined);
    const during = [];
    for (let i = 0; i < 20; i++) during.push(pub.publish(ch, `during ${i}`));
    for (let i = 0; i < 5; i++) during.push(ps.publishTopicMessage('t', `topic during ${i}`));
    await Promise.all(during);
    assert.equal(reconnectedYet, false, 'the messages were published while the subscriber was disconnected');

    const c = await reconnected;
    assert.equal(c.isResumed, true);
    assert.equal(c.operation, 'RECONNECTED');
    assert.equal(c.reasonCode, 'RECONNECT_SUCCESS');
    assert.deepEqual(c.unrestoredChannels, []);
    assert.deepEqual(
      links.events.map((e) => `${e.previousState}>${e.currentState}`),
      ['CONNECTED>DISCONNECTED', 'DISCONNECTED>CONNECTING', 'CONNECTING>CONNECTED'],
    );
    assert.equal(r.accepted, 2, 'the client came back through the relay once');

    await pub.publish(ch, 'after');
    await ps.publishTopicMessage('t', 'topic after');
    await msgs.until('the message published after the resume', (ev) => ev.some((m) => m.message === 'after'));
    await topicMsgs.until('the topic message published after the resume', (ev) => ev.some((m) => m.message === 'topic after'));
    assert.deepEqual(msgs.events.map((m) => m.message), ['before', ...Array.from({ length: 20 }, (_, i) => `during ${i}`), 'after']);
    assert.deepEqual(topicMsgs.events.map((m) => m.message), ['topic before', ...Array.from({ length: 5 }, (_, i) => `topic during ${i}`), 'topic after']);

    // The resumed session is the same: nobody was told anything, and it can publish again.
    const own = nextEvent(pub, 'message', (m) => m.channelName === ch && m.publisher === sub.userId);
    await sub.publish(ch, 'sub is back');
    await own;
    assert.deepEqual(presenceOfSub.events, [], 'a resume in time causes no presence event');
    links.stop();
    msgs.stop();
    topicMsgs.stop();
    presenceOfSub.stop();
  });

  test('a connection lost during the resume handshake is retried later, not taken as a refusal', { timeout: 25_000 }, async () => {
    const r = await relay();
    const ch = uniq('flaky');
    const sub = await clients.login(uniq('fsub'), {}, { url: r.url });
    const pub = await clients.login(uniq('fpub'));
    await sub.subscribe(ch);
    const links = record(sub, 'linkState');
    const msgs = record(sub, 'message', (m) => m.channelName === ch);

    // Every reconnection opens its WebSocket and then breaks before the server's answer.
    r.dropAfterUpgrade(true);
    r.cut();
    await links.until('a failed reconnect attempt', (ev) => ev.some((e) => e.previousState === 'CONNECTING' && e.currentState === 'DISCONNECTED'), 10_000);
    const broken = r.accepted;
    assert.ok(broken >= 2, 'the attempt reached the relay');
    await pub.publish(ch, 'meanwhile');
    const back = nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 20_000);
    r.dropAfterUpgrade(false);
    const c = await back;
    assert.equal(c.isResumed, true, 'the session was still there: resumed');
    await msgs.until('the message of the outage', (ev) => ev.some((m) => m.message === 'meanwhile'));
    const states = links.events.map((e) => e.currentState);
    assert.ok(!states.includes('FAILED'), `the link never failed: ${states.join(' > ')}`);
    const failedAttempt = links.events.find((e) => e.previousState === 'CONNECTING' && e.currentState === 'DISCONNECTED');
    assert.equal(failedAttempt.reasonCode, 'RECONNECT_TIMEOUT');
    links.stop();
    msgs.stop();
  });

  test('a session that ended while away: a new login (isResumed false) restores subscriptions, joins and states', { timeout: 40_000 }, async () => {
    const r = await relay();
    const ch = uniq('relogin');
    const sname = uniq('relogin-stream');
    const watcher = await clients.login(uniq('rw'));
    const sub = await clients.login(uniq('rs'), { presenceTimeout: 5 }, { url: r.url });
    await watcher.subscribe(ch);
    await sub.subscribe(ch);
    await sub.presence.setState(ch, 'MESSAGE', { seat: '7' });
    await sub.createStreamChannel(sname).join();
    const wstream = watcher.createStreamChannel(sname);
    await wstream.join();
    await wstream.joinTopic('t');

    const timedOut = nextEvent(watcher, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_TIMEOUT' && e.publisher === sub.userId, 15_000);
    r.refuse(true);
    r.cut();
    await timedOut; // the server ended the kept session after presenceTimeout (5 s)

    const back = nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 25_000);
    const rejoined = nextEvent(watcher, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_JOIN' && e.publisher === sub.userId, 25_000);
    r.refuse(false);
    const b = await back;
    assert.equal(b.isResumed, false, 'the session was gone: a new login');
    assert.equal(b.operation, 'RECONNECTED');
    assert.deepEqual(b.unrestoredChannels, []);
    await rejoined;

    assert.deepEqual((await watcher.presence.getState(sub.userId, ch, 'MESSAGE')).states, { seat: '7' }, 'the state was set again');
    const where = await watcher.presence.whereNow(sub.userId);
    assert.deepEqual(where.channels.map((x) => `${x.channelType}:${x.channelName}`).sort(), [`MESSAGE:${ch}`, `STREAM:${sname}`].sort());
    const got = nextEvent(sub, 'message', (m) => m.channelName === ch && m.message === 'welcome back');
    await watcher.publish(ch, 'welcome back');
    await got;
  });

  test('the same user logging in elsewhere: the first client goes FAILED with SAME_UID_LOGIN', { timeout: 20_000 }, async () => {
    const u = uniq('dup');
    const ch = uniq('dupch');
    const first = await clients.login(u);
    await first.subscribe(ch);
    const watcher = await clients.login(uniq('dupw'));
    await watcher.subscribe(ch);

    const kicked = nextEvent(first, 'linkState', (e) => e.currentState === 'FAILED');
    const left = nextEvent(watcher, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_LEAVE' && e.publisher === u);
    const second = await clients.login(u);
    const k = await kicked;
    assert.equal(k.previousState, 'CONNECTED');
    assert.equal(k.operation, 'SERVER_REJECT');
    assert.equal(k.reasonCode, 'SAME_UID_LOGIN');
    assert.deepEqual(k.affectedChannels, [ch]);
    await left;
    assertRtmError(await rejection(first.publish(ch, 'x')), -10002, 'publish');

    // The second session works; the first may log in again (no logout needed) and kicks it.
    await second.subscribe(ch);
    const got = nextEvent(second, 'message', (m) => m.channelName === ch);
    await watcher.publish(ch, 'to the second');
    assert.equal((await got).message, 'to the second');
    const kicked2 = nextEvent(second, 'linkState', (e) => e.currentState === 'FAILED');
    await first.login();
    assert.equal((await kicked2).reasonCode, 'SAME_UID_LOGIN');
  });

  // ---- encryption ----------------------------------------------------------------------------

  describe('end-to-end encryption', () => {
    const KEY = 'e2e-test-cipher-key-9f8e7d6c5b4a';
    const SALT = bytes(32, 0x51);
    const enc = (mode, key = KEY, salt = SALT) => ({ encryptionMode: mode, cipherKey: key, salt });

    test('AES_128_GCM and AES_256_GCM: same key and salt read each other; others get the sealed bytes', { timeout: 20_000 }, async () => {
      const tap = await relay();
      const ch = uniq('enc');
      const a128 = await clients.login(uniq('a128'), enc('AES_128_GCM'));
      const b128 = await clients.login(uniq('b128'), enc('AES_128_GCM'));
      const a256 = await clients.login(uniq('a256'), enc('AES_256_GCM'));
      const b256 = await clients.login(uniq('b256'), enc('AES_256_GCM'));
      const wrongKey = await clients.login(uniq('wrong'), enc('AES_256_GCM', 'another key'));
      const plain = await clients.login(uniq('plain'), {}, { url: tap.url });
      const all = [a128, b128, a256, b256, wrongKey, plain];
      for (const c of all) await c.subscribe(ch);
      const rec = new Map(all.map((c) => [c, record(c, 'message', (m) => m.channelName === ch)]));

      const TEXT128 = 'secret text, AES-128 ✓';
      const TEXT256 = 'secret text, AES-256 ✓';
      const BIN = bytes(100, 0xa0);
      await a128.publish(ch, TEXT128, { customType: 'sealed' });
      await b128.publish(ch, BIN);
      await a256.publish(ch, TEXT256);
      await b256.publish(ch, BIN);
      await plain.publish(ch, 'visible control');
      for (const r of rec.values()) await r.count(5);

      const at = (c) => rec.get(c).events;
      // Same mode, key and salt: what was published, as it was published.
      for (const c of [a128, b128]) {
        assert.equal(at(c)[0].message, TEXT128);
        assert.equal(at(c)[0].messageType, 'STRING');
        assert.equal(at(c)[0].customType, 'sealed', 'custom types are not encrypted');
        assert.deepEqual(at(c)[1].message, BIN);
        assert.equal(at(c)[1].messageType, 'BINARY');
      }
      for (const c of [a256, b256]) {
        assert.equal(at(c)[2].message, TEXT256);
        assert.equal(at(c)[2].messageType, 'STRING');
        assert.deepEqual(at(c)[3].message, BIN);
      }
      // An unencrypted message reaches encrypting clients as it is.
      for (const c of all) {
        assert.equal(at(c)[4].message, 'visible control');
        assert.equal(at(c)[4].messageType, 'STRING');
      }
      // Without the key (or with another key or mode): the sealed bytes, never text.
      const sealedOf = (c, i, plaintext, kind) => {
        const m = at(c)[i];
        assert.equal(m.messageType, 'BINARY', `${c.userId} got message ${i} as ${m.messageType}`);
        assert.ok(m.message instanceof Uint8Array);
        const plainBytes = typeof plaintext === 'string' ? new TextEncoder().encode(plaintext) : plaintext;
        assert.equal(m.message.length, plainBytes.length + 30, 'version, kind, nonce, ciphertext and tag');
        assert.equal(m.message[0], 1, 'layout version 1');
        assert.equal(m.message[1], kind, 'kind: 0 text, 1 binary');
        assert.ok(!containsBytes(m.message, plainBytes), 'the sealed bytes do not contain the plaintext');
      };
      for (const c of [plain, wrongKey, a256, b256]) {
        sealedOf(c, 0, TEXT128, 0);
        sealedOf(c, 1, BIN, 1);
      }
      for (const c of [plain, wrongKey, a128, b128]) sealedOf(c, 2, TEXT256, 0);
      sealedOf(plain, 3, BIN, 1);

      // On the wire (server to the plain client): the control text is there, the secrets are not.
      const wire = tap.toClient();
      assert.ok(containsBytes(wire, new TextEncoder().encode('visible control')), 'the tap sees unencrypted text (control)');
      assert.ok(!containsBytes(wire, new TextEncoder().encode(TEXT128)));
      assert.ok(!containsBytes(wire, new TextEncoder().encode(TEXT256)));
      for (const r of rec.values()) r.stop();
    });

    test('encrypted user messages, topic messages and history; concurrent encrypted publishes keep their order', { timeout: 20_000 }, async () => {
      const a = await clients.login(uniq('ea'), enc('AES_256_GCM'));
      const b = await clients.login(uniq('eb'), enc('AES_256_GCM'));
      const plain = await clients.login(uniq('ep'));

      const dm = nextEvent(b, 'message', (m) => m.channelType === 'USER');
      await a.publish(b.userId, 'private and sealed', { channelType: 'USER', storeInHistory: true });
      const d = await dm;
      assert.equal(d.message, 'private and sealed');
      assert.equal(d.channelName, a.userId);

      const name = uniq('enc-stream');
      const sa = a.createStreamChannel(name);
      const sb = b.createStreamChannel(name);
      const sp = plain.createStreamChannel(name);
      await sa.join();
      await sb.join();
      await sp.join();
      await sa.joinTopic('t');
      await sb.subscribeTopic('t', { users: [a.userId] });
      await sp.subscribeTopic('t', { users: [a.userId] });
      const tb = nextEvent(b, 'message', (m) => m.channelName === name);
      const tp = nextEvent(plain, 'message', (m) => m.channelName === name);
      await sa.publishTopicMessage('t', 'topic secret');
      assert.equal((await tb).message, 'topic secret');
      const sealedTopic = await tp;
      assert.equal(sealedTopic.messageType, 'BINARY');
      assert.equal(sealedTopic.topicName, 't');
      assert.equal(sealedTopic.message.length, 'topic secret'.length + 30);
      // A topic payload is at most 1 024 bytes, sealing overhead included.
      await sa.publishTopicMessage('t', bytes(1024 - 30));
      assertRtmError(await rejection(sa.publishTopicMessage('t', bytes(1024 - 29))), -11010, 'publishTopicMessage');

      // History keeps the sealed payload: the key holder reads it, others get the sealed bytes.
      const ch = uniq('enc-hist');
      await a.publish(ch, 'stored secret', { storeInHistory: true });
      const hb = await b.history.getMessages(ch, 'MESSAGE');
      assert.equal(hb.messageList[0].message, 'stored secret');
      assert.equal(hb.messageList[0].messageType, 'STRING');
      const hp = await plain.history.getMessages(ch, 'MESSAGE');
      assert.equal(hp.messageList[0].messageType, 'BINARY');
      assert.equal(hp.messageList[0].message.length, 'stored secret'.length + 30);
      assert.equal((await b.history.getMessages(a.userId, 'USER')).messageList[0].message, 'private and sealed');

      // 50 encrypted publishes at once arrive in the order they were made.
      const och = uniq('enc-order');
      await b.subscribe(och);
      const got = record(b, 'message', (m) => m.channelName === och);
      await Promise.all(Array.from({ length: 50 }, (_, i) => a.publish(och, i % 2 ? `x${i}` : bytes(i + 1, i))));
      await got.count(50);
      assert.deepEqual(
        got.events.map((m) => (typeof m.message === 'string' ? m.message : `b${m.message.length}`)),
        Array.from({ length: 50 }, (_, i) => (i % 2 ? `x${i}` : `b${i + 1}`)),
      );
      got.stop();
    });

    test('encryption settings are checked when the client is made (-10020)', () => {
      const make = (cfg) => () => new AgoraRTM.RTM('openapp', uniq('cfg'), { ...cfg, privateConfig: { serviceType: ['MESSAGE'], accessPointHosts: [server.wsUrl] } });
      const is10020 = (e) => e instanceof AgoraRTM.RTMBaseError && e.errorCode === -10020;
      assert.throws(make({ encryptionMode: 'AES_256_GCM' }), is10020, 'a mode without a key');
      assert.throws(make({ encryptionMode: 'AES_128_GCM', cipherKey: '' }), is10020, 'an empty key');
      assert.throws(make({ encryptionMode: 'AES_256_GCM', cipherKey: 'k', salt: new Uint8Array(33) }), is10020, 'a salt over 32 bytes');
      assert.throws(make({ encryptionMode: 'AES_512_GCM', cipherKey: 'k' }), is10020, 'an unknown mode');
      assert.throws(make({ encryptionMode: 'AES_256_GCM', cipherKey: 'k', salt: 'not bytes' }), is10020, 'a salt that is not bytes');
      make({ encryptionMode: 'AES_256_GCM', cipherKey: 'k', salt: new Uint8Array(5) })(); // a short salt is padded
      make({ encryptionMode: 'NONE' })();
    });
  });
});

// A server that keeps only 8 unacknowledged frames per lane for a resume, and records of at most
// 8 more: of 14 messages the client missed, 8 are sent again and 6 are reported as MessagesLost,
// which the client gets back from the history (§5.12.1).
describe('messages missed during a resume (e2e)', () => {
  let server;
  let clients;
  let r;

  before(async () => {
    server = await startServer({
      config: `
[connection]
outbound_queue = 8

[[apps]]
app_id = "openapp"
[apps.limits]
publish_rate = 1000
history_max_messages = 500
`,
    });
    clients = new Clients(server.wsUrl, 'openapp');
    r = await startRelay(server.tcpPort);
  });

  after(async () => {
    await clients?.closeAll();
    await r?.close();
    await server?.stop();
  });

  const pad = (i) => String(i).padStart(2, '0');

  /**
   * Makes `sub` miss `n` messages that `pub` publishes to `ch` (named `prefix` + 00, 01, ...):
   * holds back what the server sends `sub` while they are published, then cuts the connection,
   * so that the server wrote frames the client never got. First a probe (`prefix` + PP, of the
   * same size, delivered) measures a message frame, to know when the relay holds them all.
   * Resolves with `{ reconnected, stamps }`: the next CONNECTED event, and the timestamps.
   */
  async function missWhileHeld(sub, pub, ch, n, prefix, options = {}) {
    // Two probes: the first may come with a Lane frame (docs/protocol.md §1.5); the second is
    // a message frame alone.
    const probe1 = nextEvent(sub, 'message', (m) => m.channelName === ch && m.message === `${prefix}PP`);
    await pub.publish(ch, `${prefix}PP`, options);
    await probe1;
    const before = r.toClient().length;
    const probe2 = nextEvent(sub, 'message', (m) => m.channelName === ch && m.message === `${prefix}PQ`);
    await pub.publish(ch, `${prefix}PQ`, options);
    await probe2;
    const frame = r.toClient().length - before;
    const disconnected = nextEvent(sub, 'linkState', (e) => e.currentState === 'DISCONNECTED');
    const reconnected = nextEvent(sub, 'linkState', (e) => e.currentState === 'CONNECTED', 20_000);
    const stamps = [];
    r.pause(true);
    try {
      for (let i = 0; i < n; i++) stamps.push((await pub.publish(ch, `${prefix}${pad(i)}`, options)).timestamp);
      // Everything the server wrote is in the relay, not at the client.
      await waitFor(`the relay to hold the ${n} frames of ${frame} bytes the server wrote (holds ${r.held})`, () => r.held >= n * frame);
    } finally {
      r.cut();
      r.pause(false);
    }
    await disconnected;
    return { reconnected, stamps };
  }

  const names = (prefix, from, to) => Array.from({ length: to - from }, (_, i) => `${prefix}${pad(from + i)}`);

  test('stored messages the server no longer held come back from the history, in order, once', { timeout: 25_000 }, async () => {
    const ch = uniq('lost');
    const sub = await clients.login(uniq('lsub'), {}, { url: r.url });
    const pub = await clients.login(uniq('lpub'));
    await sub.subscribe(ch, { withPresence: false });
    const msgs = record(sub, 'message', (m) => m.channelName === ch);
    const lost = record(sub, 'messagesLost');

    const { reconnected } = await missWhileHeld(sub, pub, ch, 14, 'held ', { storeInHistory: true });
    const c = await reconnected;
    assert.equal(c.isResumed, true);
    await pub.publish(ch, 'last', { storeInHistory: true });
    await msgs.until('the last message', (ev) => ev.some((m) => m.message === 'last'), 15_000);
    assert.deepEqual(msgs.events.map((m) => m.message), ['held PP', 'held PQ', ...names('held ', 0, 14), 'last']);
    assert.deepEqual(lost.events, [], 'everything missed was found in the history');
    msgs.stop();
    lost.stop();
  });

  test('too much missed: the resume is refused, the client logs in again (isResumed false) and stays connected', { timeout: 25_000 }, async () => {
    const ch = uniq('toomuch');
    const sub = await clients.login(uniq('tsub'), {}, { url: r.url });
    const pub = await clients.login(uniq('tpub'));
    await sub.subscribe(ch, { withPresence: false });
    const links = record(sub, 'linkState');
    const msgs = record(sub, 'message', (m) => m.channelName === ch);
    // 30 missed: 8 held, records of 8 more, the rest given up.
    const { reconnected, stamps } = await missWhileHeld(sub, pub, ch, 30, 'missed ', { storeInHistory: true });
    const c = await reconnected;
    assert.equal(c.isResumed, false, 'the session was not carried over');
    assert.deepEqual(c.unrestoredChannels, []);
    const got = nextEvent(sub, 'message', (m) => m.channelName === ch && m.message === 'after');
    await pub.publish(ch, 'after');
    await got;
    assert.deepEqual(msgs.events.map((m) => m.message), ['missed PP', 'missed PQ', 'after']);
    // What was published meanwhile is in the history, after the last message seen.
    const h = await sub.history.getMessages(ch, 'MESSAGE', { end: stamps[0] });
    assert.deepEqual(h.messageList.map((m) => m.message).reverse(), names('missed ', 0, 30));
    // The refused resume left nothing behind: no other attempt comes (the first retry would
    // come within 2 s), and the link stays CONNECTED.
    await noEvent(sub, 'linkState', () => true, 2_500);
    assert.deepEqual(
      links.events.map((e) => `${e.previousState}>${e.currentState}`),
      ['CONNECTED>DISCONNECTED', 'DISCONNECTED>CONNECTING', 'CONNECTING>CONNECTED'],
    );
    links.stop();
    msgs.stop();
  });

  test('messages that were not stored: a messagesLost event says how many, between which times', { timeout: 25_000 }, async () => {
    const ch = uniq('gone');
    const sub = await clients.login(uniq('gsub'), {}, { url: r.url });
    const pub = await clients.login(uniq('gpub'));
    await sub.subscribe(ch, { withPresence: false });
    const msgs = record(sub, 'message', (m) => m.channelName === ch);
    const lost = record(sub, 'messagesLost', (e) => e.channelName === ch);
    const { reconnected, stamps } = await missWhileHeld(sub, pub, ch, 14, 'unstored ');
    assert.equal((await reconnected).isResumed, true);
    await pub.publish(ch, 'after');
    await msgs.until('the message after the resume', (ev) => ev.some((m) => m.message === 'after'), 15_000);
    await lost.count(1);
    const l = lost.events[0];
    assert.equal(l.channelType, 'MESSAGE');
    // The server held the last 8 and sent them again; the first 6 are reported, with their times.
    assert.equal(l.count, 6, 'the server held 8 of the 14 frames the client missed');
    assert.equal(l.from, stamps[0]);
    assert.equal(l.to, stamps[5]);
    assert.deepEqual(msgs.events.map((m) => m.message), ['unstored PP', 'unstored PQ', ...names('unstored ', 6, 14), 'after']);
    msgs.stop();
    lost.stop();
  });
});
