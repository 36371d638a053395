// A Signaling web app written against the official agora-rtm-sdk 2.x type declarations. It
// is compiled twice (`npm run typecheck`): against agora-rtm-sdk itself (tsconfig.agora.json,
// so we know the app is right) and with `agora-rtm-sdk` mapped to this package
// (tsconfig.json): what compiles against theirs must compile against ours.
// It is type-checked only, never run.

import AgoraRTM, { RTMEvents } from 'agora-rtm-sdk';
import type {
  ChannelType,
  GetChannelMetadataResponse,
  GetLockResponse,
  GetMessagesResponse,
  GetStateResponse,
  JoinOptions,
  LoginResponse,
  MetadataItem,
  PublishOptions,
  PublishResponse,
  RTMConfig,
  SubscribeOptions,
  SubscribeTopicResponse,
  WhereNowResponse,
  WhoNowResponse,
  ErrorInfo,
} from 'agora-rtm-sdk';

const { RTM, constantsType } = AgoraRTM;

const config: RTMConfig = {
  encryptionMode: 'AES_256_GCM',
  salt: new Uint8Array(32),
  cipherKey: 'secret',
  presenceTimeout: 30,
  heartbeatInterval: 5,
  useStringUserId: true,
  logLevel: 'warn',
  logUpload: false,
  privateConfig: { serviceType: ['MESSAGE', 'STREAM'], accessPointHosts: ['wss://rtm.example.com:4434/rtm'] },
};

export async function app(appId: string, userId: string, token: string): Promise<void> {
  const rtm = new RTM(appId, userId, config);
  const version: string = AgoraRTM.VERSION;
  void version;
  void constantsType.MessageType.STRING;

  const onMessage = (event: RTMEvents.MessageEvent) => {
    const text: string = typeof event.message === 'string' ? event.message : new TextDecoder().decode(event.message);
    const kind: 'STRING' | 'BINARY' = event.messageType;
    const where: ChannelType = event.channelType;
    console.log(where, event.channelName, event.topicName, event.publisher, event.customType, kind, text, event.timestamp);
  };
  rtm.addEventListener('message', onMessage);
  rtm.addEventListener('presence', (event) => {
    if (event.eventType === 'SNAPSHOT') for (const u of event.snapshot ?? []) console.log(u.userId, u.states, u.statesCount);
    if (event.eventType === 'INTERVAL' && event.interval) console.log(event.interval.join.users, event.interval.leave.userCount);
    if (event.eventType === 'REMOTE_STATE_CHANGED') console.log(event.publisher, event.stateChanged);
  });
  rtm.addEventListener('topic', (event) => {
    for (const t of event.topicInfos) for (const p of t.publishers) console.log(t.topicName, p.publisherUserId, p.publisherMeta);
    console.log(event.totalTopics);
  });
  rtm.addEventListener('storage', (event) => {
    const data = event.data;
    for (const [key, item] of Object.entries(data.metadata)) console.log(key, item.value, item.revision, item.authorUid, item.updated);
    console.log(event.storageType, event.eventType, data.majorRevision, data.totalCount);
  });
  rtm.addEventListener('lock', (event) => console.log(event.eventType, event.lockName, event.owner, event.ttl, event.snapshot));
  rtm.addEventListener('linkState', (event) => {
    console.log(event.previousState, event.currentState, event.operation, event.reasonCode, event.reason, event.isResumed, event.affectedChannels, event.unrestoredChannels);
  });
  rtm.addEventListener('tokenPrivilegeWillExpire', (channelName) => console.log(channelName));
  rtm.removeEventListener('message', onMessage);

  try {
    const login: LoginResponse = await rtm.login({ token });
    console.log(login.timestamp);
  } catch (status) {
    const error = status as ErrorInfo;
    console.log(error.errorCode, error.reason, error.operation);
  }
  const subscribeOptions: SubscribeOptions = { withMessage: true, withPresence: true, beQuiet: false, withMetadata: true, withLock: true };
  await rtm.subscribe('chat_room', subscribeOptions);
  const publishOptions: PublishOptions = { customType: 'text', channelType: 'MESSAGE', storeInHistory: true };
  const published: PublishResponse = await rtm.publish('chat_room', 'Hello world', publishOptions);
  console.log(published.timestamp, published.channelName);
  await rtm.publish('bob', new Uint8Array([1, 2, 3]), { channelType: 'USER' });
  await rtm.unsubscribe('chat_room');
  await rtm.renewToken(token);
  await rtm.renewToken(token, { channelName: 'Location' });

  const stream = rtm.createStreamChannel('Location');
  const joinOptions: JoinOptions = { token, withPresence: true, beQuiet: false, withMetadata: false, withLock: false };
  await stream.join(joinOptions);
  await stream.joinTopic('gesture', { meta: 'hand' });
  await stream.publishTopicMessage('gesture', 'wave', { customType: 'move' });
  const sub: SubscribeTopicResponse = await stream.subscribeTopic('gesture', { users: ['alice', 'bob'] });
  console.log(sub.succeedUsers, sub.failedUsers, sub.failedDetails.map((f) => f.user));
  console.log(stream.getSubscribedUserList('gesture').subscribed);
  await stream.unsubscribeTopic('gesture', { users: ['bob'] });
  await stream.leaveTopic('gesture');
  await stream.leave();

  const who: WhoNowResponse = await rtm.presence.whoNow('chat_room', 'MESSAGE', { includedUserId: true, includedState: true, page: '' });
  for (const o of who.occupants) console.log(o.userId, o.states, o.statesCount, who.totalOccupancy, who.nextPage);
  await rtm.presence.getOnlineUsers('chat_room', 'MESSAGE');
  const where: WhereNowResponse = await rtm.presence.whereNow('bob');
  for (const c of where.channels) console.log(c.channelName, c.channelType, where.totalChannel);
  await rtm.presence.getUserChannels('bob');
  await rtm.presence.setState('chat_room', 'MESSAGE', { mood: 'happy' });
  const state: GetStateResponse = await rtm.presence.getState('bob', 'chat_room', 'MESSAGE');
  console.log(state.states, state.statesCount, state.userId);
  await rtm.presence.removeState('chat_room', 'MESSAGE', { states: ['mood'] });

  const items: MetadataItem[] = [{ key: 'Quantity', value: '20', revision: -1 }];
  await rtm.storage.setChannelMetadata('chat_room', 'MESSAGE', items, { majorRevision: -1, lockName: '', addTimeStamp: true, addUserId: true });
  await rtm.storage.updateChannelMetadata('chat_room', 'MESSAGE', items);
  const meta: GetChannelMetadataResponse = await rtm.storage.getChannelMetadata('chat_room', 'MESSAGE');
  console.log(meta.metadata['Quantity']?.value, meta.majorRevision, meta.totalCount, meta.channelName);
  await rtm.storage.removeChannelMetadata('chat_room', 'MESSAGE', { data: items });
  await rtm.storage.setUserMetadata(items, { userId: 'alice' });
  await rtm.storage.updateUserMetadata(items);
  const mine = await rtm.storage.getUserMetadata({ userId: 'alice' });
  console.log(mine.userId, mine.metadata);
  await rtm.storage.removeUserMetadata({ data: items });
  await rtm.storage.subscribeUserMetadata('bob');
  await rtm.storage.unsubscribeUserMetadata('bob');

  await rtm.lock.setLock('chat_room', 'MESSAGE', 'mic', { ttl: 10 });
  await rtm.lock.acquireLock('chat_room', 'MESSAGE', 'mic', { retry: false });
  const locks: GetLockResponse = await rtm.lock.getLock('chat_room', 'MESSAGE');
  for (const l of locks.lockDetails) console.log(l.lockName, l.owner, l.ttl, locks.totalLocks);
  await rtm.lock.releaseLock('chat_room', 'MESSAGE', 'mic');
  await rtm.lock.revokeLock('chat_room', 'MESSAGE', 'mic', 'bob');
  await rtm.lock.removeLock('chat_room', 'MESSAGE', 'mic');

  const history: GetMessagesResponse = await rtm.history.getMessages('chat_room', 'MESSAGE', { messageCount: 50, start: 0, end: 0 });
  for (const m of history.messageList) console.log(m.message, m.messageType, m.customType, m.publisher, m.timestamp);
  console.log(history.count, history.newStart);

  await rtm.logout();
}

// The error class as an app catches it.
export function isRtmError(e: unknown): boolean {
  return e instanceof AgoraRTM.RTMBaseError && typeof e.errorCode === 'number' && typeof e.reason === 'string';
}
