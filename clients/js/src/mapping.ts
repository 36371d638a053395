// From the wire's events and values to the reference's objects, and back for options.

import type * as wire from './codec/model.js';
import type { RTMEvents } from './events.js';
import type { ChannelType, MessageKind, StateDetail, StorageData } from './types.js';

const CHANNEL_TYPES: Record<number, ChannelType> = { 1: 'MESSAGE', 2: 'STREAM', 3: 'USER' };

/** The reference's channel type of a wire one. */
export function channelTypeName(t: wire.ChannelType): ChannelType {
  return CHANNEL_TYPES[t] ?? 'MESSAGE';
}

/** The wire's channel type of a reference one, or null for something else. */
export function channelTypeNumber(t: unknown): wire.ChannelType | null {
  if (t === 'MESSAGE') return 1;
  if (t === 'STREAM') return 2;
  if (t === 'USER') return 3;
  return null;
}

/** The payload of a message as the application gave it. */
export function toPayload(message: string | Uint8Array): wire.Payload {
  return typeof message === 'string' ? { kind: 'Text', value: message } : { kind: 'Binary', value: message };
}

/** A payload as the application sees it: text, or bytes (also for one it could not decrypt). */
export function fromPayload(p: wire.Payload): { message: string | Uint8Array; messageType: MessageKind } {
  return p.kind === 'Text' ? { message: p.value, messageType: 'STRING' } : { message: p.value, messageType: 'BINARY' };
}

/** `SCREAMING_CASE` of a wire enum name (`RemoteJoin` → `REMOTE_JOIN`). */
function screaming(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
}

function userState(u: wire.UserState): RTMEvents.UserState {
  return { userId: u.userId, states: { ...u.states }, statesCount: Object.keys(u.states).length };
}

function userList(users: string[]): RTMEvents.UserList {
  return { users: [...users], userCount: users.length };
}

/** The reference's form of stored metadata. */
export function storageData(d: wire.StorageData): StorageData {
  const metadata: StorageData['metadata'] = {};
  for (const item of d.items) {
    // Defined, not assigned: a key like `__proto__` is an ordinary key here.
    Object.defineProperty(metadata, item.key, {
      value: { value: item.value, revision: item.revision, updated: item.updated, authorUid: item.authorUserId },
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { totalCount: d.items.length, majorRevision: d.majorRevision, metadata };
}

/** A presence event. */
export function presenceEvent(e: wire.PresenceEvent): RTMEvents.PresenceEvent {
  return {
    eventType: screaming(e.eventType) as RTMEvents.PresenceEvent['eventType'],
    channelType: channelTypeName(e.channelType),
    channelName: e.channelName,
    publisher: e.publisher,
    stateChanged: { ...e.stateChanged } as StateDetail,
    interval: e.interval
      ? {
          join: userList(e.interval.join),
          leave: userList(e.interval.leave),
          timeout: userList(e.interval.timeout),
          userStateList: e.interval.userStateList.map(userState),
          totalOccupancy: 0,
        }
      : null,
    snapshot: e.eventType === 'Snapshot' ? e.snapshot.map(userState) : null,
    timestamp: e.timestamp,
  };
}

/** A topic event. */
export function topicEvent(e: wire.TopicEvent): RTMEvents.TopicEvent {
  return {
    eventType: screaming(e.eventType) as RTMEvents.TopicEvent['eventType'],
    channelName: e.channelName,
    publisher: e.publisher,
    topicInfos: e.topicInfos.map((t) => ({
      topicName: t.topicName,
      publishers: t.publishers.map((p) => ({ publisherUserId: p.userId, publisherMeta: p.meta })),
      totalPublisher: t.publishers.length,
    })),
    totalTopics: e.topicInfos.length,
    timestamp: e.timestamp,
  };
}

/** A storage event. */
export function storageEvent(e: wire.StorageEvent): RTMEvents.StorageEvent {
  return {
    channelType: channelTypeName(e.channelType),
    channelName: e.channelName,
    publisher: e.publisher,
    storageType: e.storageType === 'User' ? 'USER' : 'CHANNEL',
    eventType: screaming(e.eventType) as RTMEvents.StorageEvent['eventType'],
    data: storageData(e.data),
    timestamp: e.timestamp,
  };
}

/** A lock event. */
export function lockEvent(e: wire.LockEvent): RTMEvents.LockEvent {
  return {
    channelType: channelTypeName(e.channelType),
    channelName: e.channelName,
    eventType: screaming(e.eventType) as RTMEvents.LockEvent['eventType'],
    lockName: e.lockName,
    ttl: e.ttl,
    publisher: e.publisher,
    snapshot: e.snapshot.map((l) => ({ lockName: l.lockName, owner: l.owner, ttl: l.ttl })),
    owner: e.owner,
    timestamp: e.timestamp,
  };
}

/** A message event, with its payload already opened. */
export function messageEvent(e: wire.MessageEvent, payload: wire.Payload): RTMEvents.MessageEvent {
  return {
    channelType: channelTypeName(e.channelType),
    channelName: e.channelName,
    topicName: e.topicName,
    ...fromPayload(payload),
    customType: e.customType,
    publisher: e.publisher,
    publishTime: e.timestamp,
    timestamp: e.timestamp,
  };
}

/** Joins the leading parts of a snapshot to its last part (docs/protocol.md §2.2). */
export function joinParts(parts: wire.EventPart[], last: wire.Event): wire.Event {
  if (last.kind === 'Presence') {
    const snapshot = parts.flatMap((p) => (p.kind === 'Presence' ? p.snapshot : []));
    return { ...last, snapshot: [...snapshot, ...last.snapshot] };
  }
  if (last.kind === 'Topic') {
    const topics: wire.TopicInfo[] = [];
    for (const info of [...parts.flatMap((p) => (p.kind === 'Topic' ? p.topicInfos : [])), ...last.topicInfos]) {
      const same = topics.find((t) => t.topicName === info.topicName);
      if (same) same.publishers = [...same.publishers, ...info.publishers];
      else topics.push({ topicName: info.topicName, publishers: [...info.publishers] });
    }
    return { ...last, topicInfos: topics };
  }
  return last;
}
