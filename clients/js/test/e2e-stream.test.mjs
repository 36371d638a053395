// End to end against a real rtm-server over WebSocket: stream channels (join, topics, topic
// subscriptions, topic messages, topic events, leave) and their errors (docs/protocol.md §5.7).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { AgoraRTM,  bytes, nextEvent, record, rejection,  uniq, assertRtmError, startWithClients, stopWithClients } from './support/server.mjs';

const T = { timeout: 20_000 };

const CONFIG = `
[[apps]]
app_id = "e2eapp"
[apps.limits]
presence_debounce_ms = 0
storage_rate = 500
lock_rate = 500
`;


describe('stream channels (e2e)', () => {
  let server;
  let clients;

  before(async () => {
    ({ server, clients } = await startWithClients(CONFIG, 'e2eapp'));
  });

  after(() => stopWithClients(server, clients));

  test('join, joinTopic, subscribeTopic, publishTopicMessage, leaveTopic, unsubscribeTopic, leave', T, async () => {
    const name = uniq('stream');
    const a = await clients.login(uniq('sa'));
    const b = await clients.login(uniq('sb'));
    const sa = a.createStreamChannel(name);
    const sb = b.createStreamChannel(name);
    assert.equal(sa.channelName, name);

    // Joining: a topic snapshot (no topics yet) and a presence snapshot of the stream channel.
    const topicSnapA = nextEvent(a, 'topic', (e) => e.channelName === name && e.eventType === 'SNAPSHOT');
    const presSnapA = nextEvent(a, 'presence', (e) => e.channelName === name && e.eventType === 'SNAPSHOT');
    const joined = await sa.join();
    assert.equal(typeof joined.timestamp, 'number');
    assert.deepEqual((await topicSnapA).topicInfos, []);
    const ps = await presSnapA;
    assert.equal(ps.channelType, 'STREAM');
    assert.deepEqual(ps.snapshot.map((u) => u.userId), [a.userId]);

    const bJoins = nextEvent(a, 'presence', (e) => e.channelName === name && e.eventType === 'REMOTE_JOIN');
    await sb.join();
    assert.equal((await bJoins).publisher, b.userId);

    // a publishes in topic "t1" with meta: b is told.
    const remoteJoin = nextEvent(b, 'topic', (e) => e.channelName === name && e.eventType === 'REMOTE_JOIN');
    const jt = await sa.joinTopic('t1', { meta: 'a-meta' });
    assert.equal(jt.topicName, 't1');
    const rj = await remoteJoin;
    assert.equal(rj.publisher, a.userId);
    assert.equal(rj.totalTopics, 1);
    assert.deepEqual(rj.topicInfos, [{ topicName: 't1', publishers: [{ publisherUserId: a.userId, publisherMeta: 'a-meta' }], totalPublisher: 1 }]);

    // b subscribes to a in t1 and receives a's topic messages (text and bytes), a does not.
    const sub = await sb.subscribeTopic('t1', { users: [a.userId] });
    assert.equal(sub.topicName, 't1');
    assert.deepEqual(sub.succeedUsers, [a.userId]);
    assert.deepEqual(sub.failedUsers, []);
    assert.deepEqual(sb.getSubscribedUserList('t1').subscribed, [a.userId]);
    const atB = record(b, 'message', (m) => m.channelName === name);
    const atA = record(a, 'message', (m) => m.channelName === name);
    const p = await sa.publishTopicMessage('t1', 'topic hello', { customType: 'ct' });
    assert.equal(p.topicName, 't1');
    await sa.publishTopicMessage('t1', bytes(1024, 9));
    await atB.count(2);
    const [m1, m2] = atB.events;
    assert.equal(m1.channelType, 'STREAM');
    assert.equal(m1.channelName, name);
    assert.equal(m1.topicName, 't1');
    assert.equal(m1.message, 'topic hello');
    assert.equal(m1.messageType, 'STRING');
    assert.equal(m1.customType, 'ct');
    assert.equal(m1.publisher, a.userId);
    assert.equal(m2.messageType, 'BINARY');
    assert.deepEqual(m2.message, bytes(1024, 9));

    // A publisher gets its own topic messages only when it subscribes to itself by name.
    await sa.subscribeTopic('t1', { users: [a.userId] });
    await sa.publishTopicMessage('t1', 'to both');
    await atA.count(1);
    await atB.count(3);
    assert.deepEqual(atA.events.map((m) => m.message), ['to both']);

    // a leaves the topic: b is told; a can no longer publish there.
    const remoteLeave = nextEvent(b, 'topic', (e) => e.channelName === name && e.eventType === 'REMOTE_LEAVE');
    const lt = await sa.leaveTopic('t1');
    assert.equal(lt.topicName, 't1');
    const rl = await remoteLeave;
    assert.equal(rl.publisher, a.userId);
    assert.deepEqual(rl.topicInfos.map((t) => t.topicName), ['t1']);
    assertRtmError(await rejection(sa.publishTopicMessage('t1', 'gone')), -11016, 'publishTopicMessage');

    // b unsubscribes; a joins again and publishes; b does not get it (a marker proves the order).
    await sb.unsubscribeTopic('t1');
    assert.deepEqual(sb.getSubscribedUserList('t1').subscribed, []);
    assertRtmError(await rejection(sb.unsubscribeTopic('t1')), -11013, 'unsubscribeTopic');
    await sa.joinTopic('t1');
    await sa.publishTopicMessage('t1', 'not for b');
    await sa.joinTopic('t2');
    await sb.subscribeTopic('t2', { users: [a.userId] });
    await sa.publishTopicMessage('t2', 'marker');
    await atB.until('the marker in t2', (ev) => ev.some((m) => m.message === 'marker'));
    assert.deepEqual(atB.events.map((m) => `${m.topicName}:${m.message}`).slice(3), ['t2:marker']);

    // a leaves the channel: b sees a topic REMOTE_LEAVE for every topic a published in, and the presence leave.
    const leftTopics = nextEvent(b, 'topic', (e) => e.channelName === name && e.eventType === 'REMOTE_LEAVE');
    const leftPresence = nextEvent(b, 'presence', (e) => e.channelName === name && e.eventType === 'REMOTE_LEAVE');
    await sa.leave();
    assert.deepEqual((await leftTopics).topicInfos.map((t) => t.topicName).sort(), ['t1', 't2']);
    assert.equal((await leftPresence).publisher, a.userId);
    assertRtmError(await rejection(sa.publishTopicMessage('t2', 'x')), -11001, 'publishTopicMessage');
    assertRtmError(await rejection(sa.leave()), -11001, 'leave');
    atA.stop();
    atB.stop();
  });

  test('a late joiner gets a topic snapshot; an empty users list subscribes to every publisher, later ones too', T, async () => {
    const name = uniq('snap');
    const p1 = await clients.login(uniq('p1'));
    const p2 = await clients.login(uniq('p2'));
    const late = await clients.login(uniq('late'));
    const s1 = p1.createStreamChannel(name);
    const s2 = p2.createStreamChannel(name);
    await s1.join();
    await s2.join();
    await s1.joinTopic('news', { meta: 'first' });
    await s2.joinTopic('news', { meta: 'second' });
    await s2.joinTopic('alpha');

    const snap = nextEvent(late, 'topic', (e) => e.channelName === name && e.eventType === 'SNAPSHOT');
    const sl = late.createStreamChannel(name);
    await sl.join({ withPresence: false });
    const s = await snap;
    assert.deepEqual(
      s.topicInfos.map((t) => [t.topicName, t.publishers.map((x) => `${x.publisherUserId}=${x.publisherMeta}`)]),
      [
        ['alpha', [`${p2.userId}=`]],
        ['news', [`${p1.userId}=first`, `${p2.userId}=second`]],
      ],
      'topics sorted by name, publishers in the order they joined',
    );

    const sub = await sl.subscribeTopic('news');
    assert.deepEqual(sub.succeedUsers, [p1.userId, p2.userId]);
    const p3 = await clients.login(uniq('p3'));
    const s3 = p3.createStreamChannel(name);
    await s3.join();
    await s3.joinTopic('news');
    const got = record(late, 'message', (m) => m.channelName === name);
    await s1.publishTopicMessage('news', 'from p1');
    await s2.publishTopicMessage('news', 'from p2');
    await s3.publishTopicMessage('news', 'from p3');
    await got.count(3);
    assert.deepEqual(got.events.map((m) => m.publisher), [p1.userId, p2.userId, p3.userId]);
    got.stop();
  });

  test('100 topic messages arrive in order', T, async () => {
    const name = uniq('order');
    const a = await clients.login(uniq('oa'));
    const b = await clients.login(uniq('ob'));
    const sa = a.createStreamChannel(name);
    const sb = b.createStreamChannel(name);
    await sa.join();
    await sb.join();
    await sa.joinTopic('seq');
    await sb.subscribeTopic('seq', { users: [a.userId] });
    const got = record(b, 'message', (m) => m.channelName === name);
    await Promise.all(Array.from({ length: 100 }, (_, i) => sa.publishTopicMessage('seq', `n${i}`)));
    await got.count(100);
    assert.deepEqual(got.events.map((m) => m.message), Array.from({ length: 100 }, (_, i) => `n${i}`));
    got.stop();
  });

  test('stream channel errors: not joined -11001, joined twice -10017, topic name -11008, meta -11018, size -11010, invalid users', T, async () => {
    const name = uniq('err');
    const a = await clients.login(uniq('ea'));
    const s = a.createStreamChannel(name);
    assertRtmError(await rejection(s.joinTopic('t')), -11001, 'joinTopic');
    assertRtmError(await rejection(s.subscribeTopic('t', { users: ['x'] })), -11001, 'subscribeTopic');
    assertRtmError(await rejection(s.publishTopicMessage('t', 'x')), -11001, 'publishTopicMessage');
    assertRtmError(await rejection(a.createStreamChannel('bad/name').join()), -10008, 'join');
    await s.join();
    assertRtmError(await rejection(s.join()), -10017, 'join');
    assertRtmError(await rejection(s.joinTopic('t'.repeat(17))), -11008, 'joinTopic');
    assertRtmError(await rejection(s.joinTopic('t', { meta: 'm'.repeat(257) })), -11018, 'joinTopic');
    await s.joinTopic('t', { meta: { structured: true } });
    assertRtmError(await rejection(s.publishTopicMessage('other', 'x')), -11016, 'publishTopicMessage');
    assertRtmError(await rejection(s.publishTopicMessage('t', bytes(1025))), -11010, 'publishTopicMessage');
    assertRtmError(await rejection(s.leaveTopic('never')), -11016, 'leaveTopic');

    const r = await s.subscribeTopic('t', { users: ['ok-user', 'bad/user'] });
    assert.deepEqual(r.succeedUsers, ['ok-user']);
    assert.deepEqual(r.failedUsers, ['bad/user']);
    assert.equal(r.failedDetails[0].user, 'bad/user');
    assert.equal(r.failedDetails[0].errorCode, 6, 'INVALID_REMOTE_USER');
    const tooMany = Array.from({ length: 65 }, (_, i) => `u${i}`);
    assertRtmError(await rejection(s.subscribeTopic('t', { users: tooMany })), -11003, 'subscribeTopic');

    // A stream channel and a message channel of the same name are unrelated.
    assertRtmError(await rejection(a.unsubscribe(name)), -11002, 'unsubscribe');
    assertRtmError(await rejection(a.publish(name, 'x', { channelType: 'STREAM' })), -10019, 'publish');
    await s.leave();
  });

  test('stream channel presence states, metadata and locks use channelType STREAM', T, async () => {
    const name = uniq('sps');
    const a = await clients.login(uniq('xa'));
    const b = await clients.login(uniq('xb'));
    const sa = a.createStreamChannel(name);
    const sb = b.createStreamChannel(name);
    await sa.join();
    const metaSnap = nextEvent(b, 'storage', (e) => e.channelName === name && e.eventType === 'SNAPSHOT');
    const lockSnap = nextEvent(b, 'lock', (e) => e.channelName === name && e.eventType === 'SNAPSHOT');
    await sb.join({ withMetadata: true, withLock: true });
    assert.equal((await metaSnap).channelType, 'STREAM');
    assert.equal((await lockSnap).channelType, 'STREAM');

    const st = nextEvent(b, 'presence', (e) => e.channelName === name && e.eventType === 'REMOTE_STATE_CHANGED');
    await a.presence.setState(name, 'STREAM', { seat: '3' });
    const ev = await st;
    assert.equal(ev.channelType, 'STREAM');
    assert.deepEqual(ev.stateChanged, { seat: '3' });
    assert.deepEqual((await b.presence.getState(a.userId, name, 'STREAM')).states, { seat: '3' });
    const who = await b.presence.whoNow(name, 'STREAM');
    assert.equal(who.totalOccupancy, 2);
    assert.deepEqual((await b.presence.whereNow(a.userId)).channels, [{ channelName: name, channelType: 'STREAM' }]);
    assertRtmError(await rejection(a.presence.setState(name, 'MESSAGE', { x: '1' })), -11002, 'setState');

    const upd = nextEvent(b, 'storage', (e) => e.channelName === name && e.eventType === 'UPDATE');
    await a.storage.setChannelMetadata(name, 'STREAM', [{ key: 'k', value: 'stream' }]);
    assert.equal((await upd).data.metadata.k.value, 'stream');
    assert.equal((await a.storage.getChannelMetadata(name, 'MESSAGE')).totalCount, 0, 'the message channel of that name has its own set');

    const lockSet = nextEvent(b, 'lock', (e) => e.channelName === name && e.eventType === 'SET');
    await a.lock.setLock(name, 'STREAM', 'seat');
    assert.equal((await lockSet).channelType, 'STREAM');
  });
});
