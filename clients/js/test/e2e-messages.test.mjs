// End to end against a real rtm-server over WebSocket: login and logout with their link states,
// messages to channels and users (text, bytes, custom types), subscribe options, order, and the
// errors of failed calls (docs/protocol.md §5.1–§5.4, §6, §7).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  AgoraRTM,
  bytes,
  freeTcpPort,
  nextEvent,
  record,
  rejection,
  rtmConfig,
  uniq,
  waitFor,
  withDeadline,
  assertRtmError,
  startWithClients,
  stopWithClients,
} from './support/server.mjs';

const T = { timeout: 20_000 };

// Two apps: e2eapp publishes fast enough for the order test; slowapp has the reference's kind
// of publish rate, low, to see -11025. Listing apps makes any other App ID -10003.
const CONFIG = `
[[apps]]
app_id = "e2eapp"
[apps.limits]
publish_rate = 1000

[[apps]]
app_id = "slowapp"
[apps.limits]
publish_rate = 3
`;

describe('messages, login and errors (e2e)', () => {
  let server;
  let clients;

  before(async () => {
    ({ server, clients } = await startWithClients(CONFIG, 'e2eapp'));
  });

  after(() => stopWithClients(server, clients));

  test('login and logout: linkState IDLE → CONNECTING → CONNECTED → IDLE; login again works', T, async () => {
    const a = clients.make(uniq('link'));
    const states = record(a, 'linkState');
    const login = await a.login();
    assert.equal(typeof login.timestamp, 'number');
    assert.ok(Math.abs(login.timestamp - Date.now()) < 60_000, 'the login timestamp is the server time');
    await states.count(2);
    assert.deepEqual(
      states.events.map((e) => [e.previousState, e.currentState, e.operation, e.reasonCode]),
      [
        ['IDLE', 'CONNECTING', 'LOGIN', 'LOGIN'],
        ['CONNECTING', 'CONNECTED', 'LOGIN', 'LOGIN_SUCCESS'],
      ],
    );
    for (const e of states.events) {
      assert.equal(e.serviceType, 'MESSAGE');
      assert.equal(e.isResumed, false);
      assert.deepEqual(e.unrestoredChannels, []);
      assert.equal(typeof e.timestamp, 'number');
    }

    // A second login of the same client is refused, and the link stays as it is.
    assertRtmError(await rejection(a.login(), 'a second login'), -10017, 'login');

    const out = await a.logout();
    assert.equal(typeof out.timestamp, 'number');
    await states.count(3);
    const last = states.events[2];
    assert.deepEqual([last.previousState, last.currentState, last.operation, last.reasonCode], ['CONNECTED', 'IDLE', 'LOGOUT', 'LOGOUT']);
    assert.equal(states.events.length, 3, 'the refused second login changed no link state');

    // After logout: calls are NOT_LOGIN, logout again too; a new login works.
    assertRtmError(await rejection(a.publish('x', 'y')), -10002, 'publish');
    assertRtmError(await rejection(a.logout()), -10002, 'logout');
    await a.login();
    await a.subscribe('after-relogin');
    const own = nextEvent(a, 'message', (m) => m.channelName === 'after-relogin');
    await a.publish('after-relogin', 'works');
    assert.equal((await own).message, 'works');
    await a.logout();
    states.stop();
  });

  test('every call before login is NOT_LOGIN (-10002), with its operation', T, async () => {
    const a = clients.make(uniq('early'));
    assertRtmError(await rejection(a.publish('room', 'hi')), -10002, 'publish');
    assertRtmError(await rejection(a.subscribe('room')), -10002, 'subscribe');
    assertRtmError(await rejection(a.unsubscribe('room')), -10002, 'unsubscribe');
    assertRtmError(await rejection(a.presence.whoNow('room', 'MESSAGE')), -10002, 'whoNow');
    assertRtmError(await rejection(a.storage.getChannelMetadata('room', 'MESSAGE')), -10002, 'getChannelMetadata');
    assertRtmError(await rejection(a.lock.getLock('room', 'MESSAGE')), -10002, 'getLock');
    assertRtmError(await rejection(a.createStreamChannel('s').join()), -10002, 'join');
  });

  test('configuration errors: invalid user id (-10006) and App ID (-10003) at new RTM; no accessPointHosts (-10024) at login', T, async () => {
    for (const bad of ['', 'a/b', 'null', 'x'.repeat(65), 'tab\there', 'é']) {
      const e = (() => {
        try {
          new AgoraRTM.RTM('e2eapp', bad, rtmConfig(server.wsUrl));
        } catch (err) {
          return err;
        }
        return null;
      })();
      assert.ok(e, `user id ${JSON.stringify(bad)} was accepted`);
      assertRtmError(e, -10006);
    }
    assert.throws(() => new AgoraRTM.RTM('e2eapp', '123abc', rtmConfig(server.wsUrl, { useStringUserId: false })), (e) => e.errorCode === -10006);
    assert.throws(() => new AgoraRTM.RTM('not-an-app-id!', 'u', rtmConfig(server.wsUrl)), (e) => e.errorCode === -10003);

    const noHosts = new AgoraRTM.RTM('e2eapp', uniq('nohost'), { privateConfig: { serviceType: ['MESSAGE'] } });
    assertRtmError(await rejection(noHosts.login(), 'login without accessPointHosts'), -10024, 'login');
    const noConfig = new AgoraRTM.RTM('e2eapp', uniq('nocfg'));
    assertRtmError(await rejection(noConfig.login()), -10024, 'login');
  });

  test('an App ID the server does not serve: login rejects with -10003 and the link is FAILED', T, async () => {
    const a = clients.make(uniq('app'), {}, { appId: 'otherapp' });
    const failed = nextEvent(a, 'linkState', (e) => e.currentState === 'FAILED');
    assertRtmError(await rejection(a.login()), -10003, 'login');
    const e = await failed;
    assert.equal(e.previousState, 'CONNECTING');
    assert.equal(e.operation, 'LOGIN');
  });

  test('several accessPointHosts are tried in turn: a dead port, then the server', T, async () => {
    const dead = await freeTcpPort();
    const c = clients.make(uniq('hosts'), {}, { url: [`ws://127.0.0.1:${dead}/rtm`, 'https://127.0.0.1:1/rtm', server.wsUrl] });
    await c.login();
    await c.subscribe('hosts-room');
    const got = nextEvent(c, 'message', (m) => m.channelName === 'hosts-room');
    await c.publish('hosts-room', 'through the third');
    assert.equal((await got).message, 'through the third');

    // None answers: the login fails (LOGIN_TIMEOUT) and the link is FAILED.
    const dead2 = await freeTcpPort();
    const d = clients.make(uniq('hosts'), {}, { url: [`ws://127.0.0.1:${dead}/rtm`, `ws://127.0.0.1:${dead2}/rtm`] });
    const failed = nextEvent(d, 'linkState', (e) => e.currentState === 'FAILED');
    const err = await rejection(d.login(), 'a login with no server');
    assertRtmError(err, -10011, 'login');
    assert.match(err.reason, new RegExp(String(dead2)), 'the reason names the hosts tried');
    await failed;
  });

  test('publish text and bytes to a channel: every subscriber, the publisher included, gets them', T, async () => {
    const ch = uniq('room');
    const a = await clients.login(uniq('alice'));
    const b = await clients.login(uniq('bob'));
    await a.subscribe(ch);
    await b.subscribe(ch);
    const atB = record(b, 'message', (m) => m.channelName === ch);
    const atA = record(a, 'message', (m) => m.channelName === ch);

    const r = await a.publish(ch, 'hello, wörld ✓');
    assert.equal(r.channelName, ch);
    assert.equal(typeof r.timestamp, 'number');
    const payload = bytes(300, 7);
    await a.publish(ch, payload, { customType: 'Bin-Type 1' });
    await b.publish(ch, new Uint8Array(0));

    await atB.count(3);
    await atA.count(3);
    const [text, bin, empty] = atB.events;
    assert.equal(text.message, 'hello, wörld ✓');
    assert.equal(text.messageType, 'STRING');
    assert.equal(text.channelType, 'MESSAGE');
    assert.equal(text.channelName, ch);
    assert.equal(text.topicName, '');
    assert.equal(text.publisher, a.userId);
    assert.equal(text.customType, '');
    assert.equal(text.timestamp, r.timestamp, 'the event carries the publish timestamp');
    assert.equal(bin.messageType, 'BINARY');
    assert.equal(Object.getPrototypeOf(bin.message), Uint8Array.prototype, 'a binary message is a plain Uint8Array (not a Node Buffer)');
    assert.equal(bin.message.buffer.byteLength, bin.message.length, 'a binary message has its own bytes, no view into a larger read buffer');
    assert.deepEqual([...bin.message], [...payload]);
    assert.equal(bin.customType, 'Bin-Type 1');
    assert.equal(empty.messageType, 'BINARY');
    assert.equal(empty.message.length, 0);
    assert.equal(empty.publisher, b.userId);
    // The publisher received its own messages too, the same.
    assert.deepEqual(atA.events.map((m) => [m.publisher, m.messageType]), atB.events.map((m) => [m.publisher, m.messageType]));
    atA.stop();
    atB.stop();
  });

  test('publish to a user (channelType USER): text and bytes; the receiver sees the publisher as channel', T, async () => {
    const a = await clients.login(uniq('alice'));
    const b = await clients.login(uniq('bob'));
    const got = record(b, 'message', (m) => m.channelType === 'USER');
    const r = await a.publish(b.userId, 'psst', { channelType: 'USER', customType: 'dm' });
    assert.equal(r.channelName, b.userId);
    await a.publish(b.userId, Uint8Array.of(1, 2, 3), { channelType: 'USER' });
    await got.count(2);
    const [t, bin] = got.events;
    assert.equal(t.channelType, 'USER');
    assert.equal(t.channelName, a.userId, 'a user message names its sender as the channel');
    assert.equal(t.publisher, a.userId);
    assert.equal(t.message, 'psst');
    assert.equal(t.messageType, 'STRING');
    assert.equal(t.customType, 'dm');
    assert.deepEqual([...bin.message], [1, 2, 3]);
    assert.equal(bin.messageType, 'BINARY');
    got.stop();
  });

  test('errors of a failed publish: offline user -11033, over 32 KiB -11010, custom types -11029/-11030, STREAM -10019', T, async () => {
    const a = await clients.login(uniq('alice'));
    assertRtmError(await rejection(a.publish(uniq('nobody'), 'hi', { channelType: 'USER' })), -11033, 'publish');

    const ch = uniq('big');
    await a.subscribe(ch);
    const got = nextEvent(a, 'message', (m) => m.channelName === ch);
    await a.publish(ch, bytes(32 * 1024, 3)); // exactly the limit: fine
    const m = await got;
    assert.equal(m.message.length, 32 * 1024);
    assert.deepEqual(m.message, bytes(32 * 1024, 3));
    assertRtmError(await rejection(a.publish(ch, bytes(32 * 1024 + 1))), -11010, 'publish');
    assertRtmError(await rejection(a.publish(ch, 'x'.repeat(32 * 1024 + 1))), -11010, 'publish');
    // The connection goes on after a refused publish.
    const next = nextEvent(a, 'message', (e) => e.channelName === ch);
    await a.publish(ch, 'still here');
    assert.equal((await next).message, 'still here');

    assertRtmError(await rejection(a.publish(ch, 'x', { customType: 'c'.repeat(33) })), -11029, 'publish');
    assertRtmError(await rejection(a.publish(ch, 'x', { customType: 'tab\there' })), -11030, 'publish');
    assertRtmError(await rejection(a.publish(ch, 'x', { channelType: 'STREAM' })), -10019, 'publish');
    assertRtmError(await rejection(a.publish(ch, 42)), -11009, 'publish');
  });

  test('subscribe errors: bad channel name -10008, unsubscribe of a channel not subscribed -11002', T, async () => {
    const a = await clients.login(uniq('alice'));
    assertRtmError(await rejection(a.subscribe('bad/name')), -10008, 'subscribe');
    assertRtmError(await rejection(a.subscribe('y'.repeat(65))), -10008, 'subscribe');
    assertRtmError(await rejection(a.unsubscribe(uniq('never'))), -11002, 'unsubscribe');
  });

  test('subscribe with withMessage false receives no messages; changing the options turns them on', T, async () => {
    const ch = uniq('quiet');
    const a = await clients.login(uniq('alice'));
    const c = await clients.login(uniq('carol'));
    await c.subscribe(ch, { withMessage: false });
    const atC = record(c, 'message', (m) => m.channelName === ch);
    await a.publish(ch, 'not for carol');
    // Same publisher, same channel: messages arrive in publish order, so once carol gets the
    // second one she would have had the first.
    await c.subscribe(ch, { withMessage: true });
    await a.publish(ch, 'for carol');
    await atC.count(1);
    const second = nextEvent(c, 'message', (m) => m.channelName === ch && m.message === 'marker');
    await a.publish(ch, 'marker');
    await second;
    assert.deepEqual(atC.events.map((m) => m.message), ['for carol', 'marker']);
    atC.stop();
  });

  test('unsubscribe stops the messages of the channel', T, async () => {
    const ch = uniq('unsub');
    const a = await clients.login(uniq('alice'));
    const b = await clients.login(uniq('bob'));
    await b.subscribe(ch);
    const atB = record(b, 'message', (m) => m.channelName === ch);
    await a.publish(ch, 'before');
    await atB.count(1);
    const u = await b.unsubscribe(ch);
    assert.equal(u.channelName, ch);
    await a.publish(ch, 'while away');
    await b.subscribe(ch);
    await a.publish(ch, 'back');
    await atB.until('the message after subscribing again', (ev) => ev.some((m) => m.message === 'back'));
    assert.deepEqual(atB.events.map((m) => m.message), ['before', 'back']);
    atB.stop();
  });

  test('200 messages published at once arrive in order, at the subscriber and at the publisher', T, async () => {
    const ch = uniq('order');
    const a = await clients.login(uniq('alice'));
    const b = await clients.login(uniq('bob'));
    await a.subscribe(ch);
    await b.subscribe(ch);
    const atA = record(a, 'message', (m) => m.channelName === ch);
    const atB = record(b, 'message', (m) => m.channelName === ch);
    const answers = await withDeadline(
      Promise.all(Array.from({ length: 200 }, (_, i) => a.publish(ch, `m${i}`))),
      10_000,
      '200 publishes to be answered',
    );
    assert.equal(answers.length, 200);
    await atB.count(200);
    await atA.count(200);
    const expected = Array.from({ length: 200 }, (_, i) => `m${i}`);
    assert.deepEqual(atB.events.map((m) => m.message), expected);
    assert.deepEqual(atA.events.map((m) => m.message), expected);
    const ts = atB.events.map((m) => m.timestamp);
    assert.ok(ts.every((t, i) => i === 0 || t >= ts[i - 1]), 'timestamps do not go back');
    atA.stop();
    atB.stop();
  });

  test('over the app publish rate: -11025, and what was refused is not delivered', T, async () => {
    const ch = uniq('rate');
    const a = await clients.login(uniq('fast'), {}, { appId: 'slowapp' });
    await a.subscribe(ch);
    const got = record(a, 'message', (m) => m.channelName === ch);
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => a.publish(ch, `r${i}`)));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
    assert.ok(ok >= 1 && ok <= 6, `${ok} of 10 publishes at once were accepted with publish_rate 3`);
    assert.ok(refused.length >= 4);
    for (const e of refused) assertRtmError(e, -11025, 'publish');
    await got.count(ok);
    // Delivered are exactly the accepted ones, in order.
    const accepted = results.map((r, i) => (r.status === 'fulfilled' ? `r${i}` : null)).filter(Boolean);
    const marker = nextEvent(a, 'message', (m) => m.channelName === ch && m.message === 'end');
    // A refused publish does not count against the rate: retry until the rate lets one through.
    await waitFor('a publish within the rate', async () => {
      try {
        await a.publish(ch, 'end');
        return true;
      } catch (e) {
        if (e.errorCode !== -11025) throw Object.assign(e, { fatal: true });
        return false;
      }
    }, 10_000, 100);
    await marker;
    assert.deepEqual(got.events.map((m) => m.message), [...accepted, 'end']);
    got.stop();
  });
});
