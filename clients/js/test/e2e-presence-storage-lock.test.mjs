// End to end against a real rtm-server over WebSocket: presence (events, whoNow, whereNow,
// states), channel and user metadata with revisions and storage events, locks and lock events,
// and the message history (docs/protocol.md §5.8–§5.10, §5.12).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { AgoraRTM,  nextEvent, record, rejection,  uniq, assertRtmError, startWithClients, stopWithClients } from './support/server.mjs';

const T = { timeout: 20_000 };

// presence_debounce_ms = 0: a leave is announced at once. presence_page_size = 2: whoNow pages.
// Generous storage and lock rates so that the tests are not throttled; history on.
const CONFIG = `
[[apps]]
app_id = "e2eapp"
[apps.limits]
publish_rate = 1000
storage_rate = 500
lock_rate = 500
presence_debounce_ms = 0
presence_page_size = 2
history_max_messages = 100

[[apps]]
app_id = "nohistory"
`;


describe('presence, storage, locks and history (e2e)', () => {
  let server;
  let clients;

  before(async () => {
    ({ server, clients } = await startWithClients(CONFIG, 'e2eapp'));
  });

  after(() => stopWithClients(server, clients));

  // ---- presence ------------------------------------------------------------------------------

  test('presence events: SNAPSHOT, REMOTE_JOIN, REMOTE_STATE_CHANGED (full state), REMOTE_LEAVE', T, async () => {
    const ch = uniq('pres');
    const a = await clients.login(uniq('pa'));
    const b = await clients.login(uniq('pb'));

    const snapA = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await a.subscribe(ch);
    const sa = await snapA;
    assert.equal(sa.channelType, 'MESSAGE');
    assert.deepEqual(sa.snapshot.map((u) => u.userId), [a.userId], 'the snapshot lists the subscriber itself');

    const join = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_JOIN');
    const snapB = nextEvent(b, 'presence', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await b.subscribe(ch);
    const j = await join;
    assert.equal(j.publisher, b.userId);
    assert.equal(j.channelType, 'MESSAGE');
    assert.equal(j.snapshot, null);
    const sb = await snapB;
    assert.deepEqual(sb.snapshot.map((u) => u.userId), [a.userId, b.userId].sort(), 'the snapshot is sorted by user id');

    const changed = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await b.presence.setState(ch, 'MESSAGE', { mood: 'happy' });
    let c = await changed;
    assert.equal(c.publisher, b.userId);
    assert.deepEqual(c.stateChanged, { mood: 'happy' });

    const changed2 = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await b.presence.setState(ch, 'MESSAGE', { x: '1', mood: 'calm' });
    c = await changed2;
    assert.deepEqual(c.stateChanged, { mood: 'calm', x: '1' }, 'the event carries the full state after the merge');

    const changed3 = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await b.presence.removeState(ch, 'MESSAGE', { states: ['x', 'not-there'] });
    assert.deepEqual((await changed3).stateChanged, { mood: 'calm' });

    const changed4 = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_STATE_CHANGED');
    await b.presence.removeState(ch, 'MESSAGE');
    assert.deepEqual((await changed4).stateChanged, {});

    // A user that joins quietly causes no event; a is told of b leaving (debounce off).
    const q = await clients.login(uniq('pq'));
    const joins = record(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_JOIN');
    await q.subscribe(ch, { beQuiet: true });
    const leave = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_LEAVE');
    await b.unsubscribe(ch);
    const l = await leave;
    assert.equal(l.publisher, b.userId);
    assert.deepEqual(joins.events, [], 'the quiet user caused no REMOTE_JOIN');
    joins.stop();

    // A logout is a leave too.
    await b.subscribe(ch);
    const leave2 = nextEvent(a, 'presence', (e) => e.channelName === ch && e.eventType === 'REMOTE_LEAVE' && e.publisher === b.userId);
    await b.logout();
    await leave2;
  });

  test('whoNow (paged, with states), whereNow, getState, and presence errors', T, async () => {
    const ch = uniq('who');
    const users = [];
    for (const name of ['wc', 'wa', 'wb']) users.push(await clients.login(uniq(name)));
    const quiet = await clients.login(uniq('wq'));
    for (const u of users) await u.subscribe(ch);
    await quiet.subscribe(ch, { beQuiet: true });
    await users[0].presence.setState(ch, 'MESSAGE', { role: 'host' });

    // Page size 2 (configured): two pages, sorted by user id, the quiet user absent.
    const asker = users[1];
    const p1 = await asker.presence.whoNow(ch, 'MESSAGE', { includedState: true });
    assert.equal(p1.totalOccupancy, 3);
    assert.equal(p1.occupants.length, 2);
    assert.notEqual(p1.nextPage, '');
    const p2 = await asker.presence.whoNow(ch, 'MESSAGE', { includedState: true, page: p1.nextPage });
    assert.equal(p2.nextPage, '');
    const all = [...p1.occupants, ...p2.occupants];
    assert.deepEqual(all.map((o) => o.userId), users.map((u) => u.userId).sort());
    const host = all.find((o) => o.userId === users[0].userId);
    assert.deepEqual(host.states, { role: 'host' });
    assert.equal(host.statesCount, 1);
    const count = await asker.presence.getOnlineUsers(ch, 'MESSAGE', { includedUserId: false });
    assert.equal(count.totalOccupancy, 3);
    assert.deepEqual(count.occupants, []);
    // The server checks that a page looks like one it gives (its cursors are user ids).
    assertRtmError(await rejection(asker.presence.whoNow(ch, 'MESSAGE', { page: 'no/such/page' })), -13003, 'whoNow');
    assertRtmError(await rejection(asker.presence.whoNow(ch, 'MESSAGE', { includedUserId: false, includedState: true })), -13003, 'whoNow');

    const where = await asker.presence.whereNow(users[0].userId);
    assert.deepEqual(where.channels, [{ channelName: ch, channelType: 'MESSAGE' }]);
    assert.equal(where.totalChannel, 1);
    assert.deepEqual((await asker.presence.whereNow(quiet.userId)).channels, [], 'a quiet user is nowhere');
    assert.deepEqual((await asker.presence.getUserChannels(uniq('offline'))).channels, []);

    const st = await asker.presence.getState(users[0].userId, ch, 'MESSAGE');
    assert.equal(st.userId, users[0].userId);
    assert.deepEqual(st.states, { role: 'host' });
    assert.equal(st.statesCount, 1);
    assertRtmError(await rejection(asker.presence.getState(uniq('ghost'), ch, 'MESSAGE')), -13011, 'getState');
    assertRtmError(await rejection(asker.presence.getState(quiet.userId, ch, 'MESSAGE')), -13011, 'getState');

    assertRtmError(await rejection(asker.presence.setState(uniq('notin'), 'MESSAGE', { a: 'b' })), -11002, 'setState');
    assertRtmError(await rejection(asker.presence.setState(ch, 'MESSAGE', { '': 'b' })), -13006, 'setState');
    assertRtmError(await rejection(asker.presence.setState(ch, 'MESSAGE', { k: 'v'.repeat(1025) })), -13009, 'setState');
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']));
    assertRtmError(await rejection(asker.presence.setState(ch, 'MESSAGE', many)), -13005, 'setState');
    assertRtmError(await rejection(asker.presence.whoNow(ch, 'NOPE')), -10019, 'whoNow');
  });

  // ---- storage -------------------------------------------------------------------------------

  test('channel metadata: set, update, remove, get with revisions; storage events with withMetadata', T, async () => {
    const ch = uniq('meta');
    const a = await clients.login(uniq('ma'));
    const w = await clients.login(uniq('mw'));

    const snap = nextEvent(a, 'storage', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await a.subscribe(ch, { withMetadata: true });
    const s0 = await snap;
    assert.equal(s0.storageType, 'CHANNEL');
    assert.equal(s0.channelType, 'MESSAGE');
    assert.equal(s0.data.totalCount, 0);
    assert.equal(s0.data.majorRevision, 0, 'a set that does not exist has major revision 0');

    const events = record(a, 'storage', (e) => e.channelName === ch && e.eventType !== 'SNAPSHOT');
    const set = await w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k1', value: 'v1' }, { key: 'k2', value: 'v2' }], { addUserId: true, addTimeStamp: true });
    assert.equal(set.totalCount, 2);
    assert.equal(set.channelName, ch);
    assert.equal(set.channelType, 'MESSAGE');
    await events.count(1);
    const e1 = events.events[0];
    assert.equal(e1.eventType, 'UPDATE');
    assert.equal(e1.storageType, 'CHANNEL');
    assert.equal(e1.publisher, w.userId);
    assert.equal(e1.data.totalCount, 2);
    assert.deepEqual(Object.keys(e1.data.metadata), ['k1', 'k2']);
    assert.equal(e1.data.metadata.k1.value, 'v1');
    assert.equal(e1.data.metadata.k1.authorUid, w.userId);
    assert.ok(Math.abs(e1.data.metadata.k1.updated - Date.now()) < 60_000, 'addTimeStamp recorded the time');
    const rev1 = e1.data.majorRevision;
    assert.ok(rev1 > 0);
    assert.equal(e1.data.metadata.k2.revision, rev1, 'items written get the write revision');

    const got = await w.storage.getChannelMetadata(ch, 'MESSAGE');
    assert.equal(got.majorRevision, rev1);
    assert.equal(got.totalCount, 2);
    assert.equal(got.metadata.k2.value, 'v2');
    assert.equal(got.channelName, ch);

    // Update with the right item revision; a stale one is -12014; a missing key too.
    await w.storage.updateChannelMetadata(ch, 'MESSAGE', [{ key: 'k1', value: 'v1b', revision: rev1 }]);
    await events.count(2);
    const e2 = events.events[1];
    assert.equal(e2.data.metadata.k1.value, 'v1b');
    const rev2 = e2.data.metadata.k1.revision;
    assert.ok(rev2 > rev1, 'revisions grow');
    assert.equal(e2.data.metadata.k2.revision, rev1, 'an item not written keeps its revision');
    assert.equal(e2.data.metadata.k1.authorUid, '', 'a write without addUserId clears the author');
    assertRtmError(await rejection(w.storage.updateChannelMetadata(ch, 'MESSAGE', [{ key: 'k1', value: 'x', revision: rev1 }])), -12014, 'updateChannelMetadata');
    assertRtmError(await rejection(w.storage.updateChannelMetadata(ch, 'MESSAGE', [{ key: 'nope', value: 'x' }])), -12014, 'updateChannelMetadata');
    assertRtmError(await rejection(w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k3', value: 'x' }], { majorRevision: rev1 })), -12014, 'setChannelMetadata');
    await w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k3', value: 'v3' }], { majorRevision: rev2 });
    await events.count(3);
    assert.deepEqual(Object.keys(events.events[2].data.metadata), ['k1', 'k2', 'k3'], 'new keys go to the end');

    // Item errors.
    assertRtmError(await rejection(w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: '', value: 'x' }])), -12009, 'setChannelMetadata');
    assertRtmError(await rejection(w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k'.repeat(33), value: 'x' }])), -12011, 'setChannelMetadata');
    assertRtmError(await rejection(w.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'a', value: '1' }, { key: 'a', value: '2' }])), -12013, 'setChannelMetadata');
    assertRtmError(await rejection(w.storage.setChannelMetadata(ch, 'MESSAGE', [])), -12003, 'setChannelMetadata');

    // Remove one item, then the whole set.
    const rm = await w.storage.removeChannelMetadata(ch, 'MESSAGE', { data: [{ key: 'k2', value: '' }] });
    assert.equal(rm.totalCount, 2);
    await events.count(4);
    assert.deepEqual(Object.keys(events.events[3].data.metadata), ['k1', 'k3']);
    await w.storage.removeChannelMetadata(ch, 'MESSAGE');
    await events.count(5);
    assert.equal(events.events[4].data.totalCount, 0);
    assert.equal(events.events[4].data.majorRevision, 0, 'a removed set is an update with no items and major revision 0');
    const empty = await w.storage.getChannelMetadata(ch, 'MESSAGE');
    assert.equal(empty.totalCount, 0);
    assertRtmError(await rejection(w.storage.removeChannelMetadata(ch, 'MESSAGE')), -12014, 'removeChannelMetadata');
    assert.equal(events.events.length, 5, 'failed writes caused no event');
    events.stop();
  });

  test('user metadata with subscribeUserMetadata: snapshot, updates, unsubscribe', T, async () => {
    const owner = await clients.login(uniq('uo'));
    const watcher = await clients.login(uniq('uw'));
    await owner.storage.setUserMetadata([{ key: 'name', value: 'Olive' }]);

    const snap = nextEvent(watcher, 'storage', (e) => e.channelName === owner.userId && e.eventType === 'SNAPSHOT');
    const sub = await watcher.storage.subscribeUserMetadata(owner.userId);
    assert.equal(sub.userId, owner.userId);
    const s = await snap;
    assert.equal(s.storageType, 'USER');
    assert.equal(s.channelType, 'USER');
    assert.equal(s.data.metadata.name.value, 'Olive');

    const updates = record(watcher, 'storage', (e) => e.channelName === owner.userId && e.eventType !== 'SNAPSHOT');
    const r = await owner.storage.updateUserMetadata([{ key: 'name', value: 'Olivia' }]);
    assert.equal(r.userId, owner.userId);
    await owner.storage.setUserMetadata([{ key: 'city', value: 'Oslo' }], { addUserId: true });
    await updates.count(2);
    const [u1, u2] = updates.events;
    assert.equal(u1.storageType, 'USER');
    assert.equal(u1.channelName, owner.userId);
    assert.equal(u1.publisher, owner.userId);
    assert.equal(u1.data.metadata.name.value, 'Olivia');
    assert.deepEqual(Object.keys(u2.data.metadata), ['name', 'city']);
    assert.equal(u2.data.metadata.city.authorUid, owner.userId);

    const read = await watcher.storage.getUserMetadata({ userId: owner.userId });
    assert.equal(read.userId, owner.userId);
    assert.equal(read.totalCount, 2);
    assert.equal(read.metadata.city.value, 'Oslo');
    const mine = await owner.storage.getUserMetadata();
    assert.equal(mine.userId, owner.userId);
    assert.equal(mine.totalCount, 2);

    // Someone else may write a user's set; removing an item.
    await watcher.storage.removeUserMetadata({ userId: owner.userId, data: [{ key: 'name', value: '' }] });
    await updates.count(3);
    assert.equal(updates.events[2].publisher, owner.userId, 'a user set event names the user whose set it is');
    assert.deepEqual(Object.keys(updates.events[2].data.metadata), ['city']);

    // After unsubscribing, no more events: the next event is the snapshot of subscribing again.
    await watcher.storage.unsubscribeUserMetadata(owner.userId);
    await owner.storage.setUserMetadata([{ key: 'late', value: '1' }]);
    const again = nextEvent(watcher, 'storage', (e) => e.channelName === owner.userId && e.eventType === 'SNAPSHOT');
    await watcher.storage.subscribeUserMetadata(owner.userId);
    assert.ok((await again).data.metadata.late);
    assert.equal(updates.events.length, 3, 'no update reached the watcher while it was not subscribed');
    updates.stop();
    await watcher.storage.unsubscribeUserMetadata(owner.userId);
    assertRtmError(await rejection(watcher.storage.unsubscribeUserMetadata(owner.userId)), -12015, 'unsubscribeUserMetadata');
  });

  // ---- locks ---------------------------------------------------------------------------------

  test('locks: set, acquire (with and without retry), release, revoke, remove, getLock, and lock events', T, async () => {
    const ch = uniq('lock');
    const a = await clients.login(uniq('la'));
    const b = await clients.login(uniq('lb'));
    const watcher = await clients.login(uniq('lw'));

    const snap = nextEvent(watcher, 'lock', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await watcher.subscribe(ch, { withLock: true });
    assert.deepEqual((await snap).snapshot, []);
    const events = record(watcher, 'lock', (e) => e.channelName === ch);

    const set = await a.lock.setLock(ch, 'MESSAGE', 'L1', { ttl: 30 });
    assert.equal(set.lockName, 'L1');
    assert.equal(set.channelName, ch);
    assertRtmError(await rejection(a.lock.setLock(ch, 'MESSAGE', 'L1')), -14004, 'setLock');
    await a.lock.acquireLock(ch, 'MESSAGE', 'L1');
    await a.lock.acquireLock(ch, 'MESSAGE', 'L1'); // already the holder: done
    assertRtmError(await rejection(b.lock.acquireLock(ch, 'MESSAGE', 'L1')), -14007, 'acquireLock');
    assertRtmError(await rejection(b.lock.releaseLock(ch, 'MESSAGE', 'L1')), -14006, 'releaseLock');

    // b waits for the lock; a's release hands it over.
    const waiting = b.lock.acquireLock(ch, 'MESSAGE', 'L1', { retry: true });
    const toB = nextEvent(watcher, 'lock', (e) => e.channelName === ch && e.eventType === 'ACQUIRED' && e.owner === b.userId);
    await a.lock.releaseLock(ch, 'MESSAGE', 'L1');
    const acquired = await waiting;
    assert.equal(acquired.lockName, 'L1');
    await toB;

    const locks = await a.lock.getLock(ch, 'MESSAGE');
    assert.equal(locks.totalLocks, 1);
    assert.deepEqual(locks.lockDetails, [{ lockName: 'L1', owner: b.userId, ttl: 30 }]);

    // a revokes b's lock; then removes it.
    assertRtmError(await rejection(a.lock.revokeLock(ch, 'MESSAGE', 'L1', a.userId)), -14006, 'revokeLock');
    await a.lock.revokeLock(ch, 'MESSAGE', 'L1', b.userId);
    await a.lock.removeLock(ch, 'MESSAGE', 'L1');
    await events.until('the REMOVED event', (ev) => ev.some((e) => e.eventType === 'REMOVED'));
    assert.deepEqual(
      events.events.map((e) => [e.eventType, e.owner, e.publisher]),
      [
        ['SET', '', a.userId],
        ['ACQUIRED', a.userId, a.userId],
        ['RELEASED', '', a.userId],
        ['ACQUIRED', b.userId, b.userId],
        ['RELEASED', '', a.userId],
        ['REMOVED', '', a.userId],
      ],
    );
    assert.equal(events.events[0].ttl, 30);
    assert.ok(events.events.every((e) => e.lockName === 'L1' && e.channelType === 'MESSAGE'));
    events.stop();

    assert.equal((await a.lock.getLock(ch, 'MESSAGE')).totalLocks, 0);
    assertRtmError(await rejection(a.lock.acquireLock(ch, 'MESSAGE', 'L1')), -14008, 'acquireLock');
    assertRtmError(await rejection(a.lock.removeLock(ch, 'MESSAGE', 'L1')), -14008, 'removeLock');
    assertRtmError(await rejection(a.lock.setLock(ch, 'MESSAGE', 'bad\u0001name')), -14005, 'setLock');

    // A waiter of a removed lock is answered -14008.
    await a.lock.setLock(ch, 'MESSAGE', 'L2');
    await a.lock.acquireLock(ch, 'MESSAGE', 'L2');
    const waiter = rejection(b.lock.acquireLock(ch, 'MESSAGE', 'L2', { retry: true }), 'waiting for a lock that is removed');
    const snapLater = nextEvent(b, 'lock', (e) => e.channelName === ch && e.eventType === 'SNAPSHOT');
    await b.subscribe(ch, { withLock: true });
    const sl = await snapLater;
    assert.deepEqual(sl.snapshot, [{ lockName: 'L2', owner: a.userId, ttl: 10 }], 'a snapshot lists the locks; ttl 10 by default');
    await a.lock.removeLock(ch, 'MESSAGE', 'L2');
    assertRtmError(await waiter, -14008, 'acquireLock');
  });

  test('a metadata write guarded by a lock: only its holder may write (-12008 otherwise)', T, async () => {
    const ch = uniq('guard');
    const a = await clients.login(uniq('ga'));
    const b = await clients.login(uniq('gb'));
    await a.lock.setLock(ch, 'MESSAGE', 'writer');
    await a.lock.acquireLock(ch, 'MESSAGE', 'writer');
    await a.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k', value: 'by a' }], { lockName: 'writer' });
    assertRtmError(await rejection(b.storage.setChannelMetadata(ch, 'MESSAGE', [{ key: 'k', value: 'by b' }], { lockName: 'writer' })), -12008, 'setChannelMetadata');
    assertRtmError(await rejection(a.storage.setUserMetadata([{ key: 'k', value: 'v' }], { lockName: 'writer' })), -12007, 'setUserMetadata');
    assert.equal((await b.storage.getChannelMetadata(ch, 'MESSAGE')).metadata.k.value, 'by a');
  });

  // ---- history -------------------------------------------------------------------------------

  test('history: storeInHistory, getMessages newest first, paging with newStart', T, async () => {
    const ch = uniq('hist');
    const a = await clients.login(uniq('ha'));
    const b = await clients.login(uniq('hb'));
    const published = [];
    for (let i = 0; i < 5; i++) {
      const msg = i === 2 ? Uint8Array.of(0, 1, 2, i) : `h${i}`;
      const r = await a.publish(ch, msg, { storeInHistory: true, customType: `t${i}` });
      published.push({ msg, timestamp: r.timestamp });
    }
    await a.publish(ch, 'not stored'); // without storeInHistory

    const first = await b.history.getMessages(ch, 'MESSAGE', { messageCount: 2 });
    assert.equal(first.count, 2);
    assert.deepEqual(first.messageList.map((m) => m.message), ['h4', 'h3'], 'newest first');
    assert.equal(first.messageList[0].publisher, a.userId);
    assert.equal(first.messageList[0].customType, 't4');
    assert.equal(first.messageList[0].messageType, 'STRING');
    assert.equal(first.messageList[0].timestamp, published[4].timestamp, 'the stored timestamp is the publish timestamp');
    assert.equal(first.newStart, published[3].timestamp, 'newStart is the oldest message returned');

    const second = await b.history.getMessages(ch, 'MESSAGE', { messageCount: 2, start: first.newStart });
    assert.equal(second.messageList[0].messageType, 'BINARY');
    assert.deepEqual([...second.messageList[0].message], [0, 1, 2, 2]);
    assert.equal(second.messageList[1].message, 'h1');
    const third = await b.history.getMessages(ch, 'MESSAGE', { messageCount: 2, start: second.newStart });
    assert.deepEqual(third.messageList.map((m) => m.message), ['h0']);
    assert.equal(third.newStart, 0, 'the last page has newStart 0');

    const all = await b.history.getMessages(ch, 'MESSAGE');
    assert.equal(all.count, 5, 'a message published without storeInHistory is not stored');
    const ts = all.messageList.map((m) => m.timestamp);
    assert.ok(ts.every((t, i) => i === 0 || t < ts[i - 1]), 'timestamps are unique and decrease');

    // A window: not older than `end` (inclusive), strictly older than `start`.
    const window = await b.history.getMessages(ch, 'MESSAGE', { start: published[4].timestamp, end: published[2].timestamp });
    assert.equal(window.count, 2);
    assert.equal(window.messageList[0].message, 'h3');
    assertRtmError(await rejection(b.history.getMessages(ch, 'MESSAGE', { start: 1000, end: 2000 })), -15002, 'getMessages');
    assertRtmError(await rejection(b.history.getMessages(ch, 'STREAM')), -10019, 'getMessages');
  });

  test('history of a conversation: both users read it; a stored message to an offline user is -11035', T, async () => {
    const a = await clients.login(uniq('ca'));
    const b = await clients.login(uniq('cb'));
    const got = nextEvent(b, 'message', (m) => m.channelType === 'USER' && m.publisher === a.userId);
    await a.publish(b.userId, 'hi b', { channelType: 'USER', storeInHistory: true });
    assert.equal((await got).message, 'hi b');
    await b.publish(a.userId, 'hi a', { channelType: 'USER', storeInHistory: true });
    const atB = await b.history.getMessages(a.userId, 'USER');
    assert.deepEqual(atB.messageList.map((m) => [m.publisher, m.message]), [[b.userId, 'hi a'], [a.userId, 'hi b']]);
    const atA = await a.history.getMessages(b.userId, 'USER');
    assert.deepEqual(atA.messageList.map((m) => m.message), ['hi a', 'hi b']);

    const offline = uniq('away');
    assertRtmError(await rejection(a.publish(offline, 'for later', { channelType: 'USER', storeInHistory: true })), -11035, 'publish');
    const later = await a.history.getMessages(offline, 'USER');
    assert.deepEqual(later.messageList.map((m) => m.message), ['for later'], 'the message to the offline user was stored');
  });

  test('an app without history: storeInHistory and getMessages are -15005', T, async () => {
    const a = await clients.login(uniq('nh'), {}, { appId: 'nohistory' });
    assertRtmError(await rejection(a.publish('room', 'x', { storeInHistory: true })), -15005, 'publish');
    assertRtmError(await rejection(a.history.getMessages('room', 'MESSAGE')), -15005, 'getMessages');
  });
});
