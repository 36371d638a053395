// `rtm.presence`: who is in a channel, where a user is, and this user's temporary state
// (docs/protocol.md §5.8).

import type { RTMClient } from './client.js';
import type * as wire from './codec/model.js';
import { Code, rtmError } from './errors.js';
import { channelTypeName, channelTypeNumber } from './mapping.js';
import type {
  ChannelType,
  GetOnlineUsersOptions,
  GetOnlineUsersResponse,
  GetStateResponse,
  GetUserChannelsResponse,
  RemoveStateOptions,
  RemoveStateResponse,
  SetStateResponse,
  StateDetail,
  WhereNowResponse,
  WhoNowOptions,
  WhoNowResponse,
} from './types.js';

/** The wire channel type of `t`, or a rejection for `operation`. */
export function wireChannelType(operation: string, t: ChannelType): wire.ChannelType {
  const n = channelTypeNumber(t);
  if (n === null) throw rtmError(operation, Code.INVALID_CHANNEL_TYPE, `unknown channel type ${String(t)}`);
  return n;
}

/** Checks that `r` is the answer `kind`, for TypeScript and against a confused server. */
export function expect<K extends wire.Response['kind']>(operation: string, r: wire.Response, kind: K): Extract<wire.Response, { kind: K }> {
  if (r.kind !== kind) throw rtmError(operation, Code.INVALID_PARAMETER, `the server answered ${r.kind} instead of ${kind}`);
  return r as Extract<wire.Response, { kind: K }>;
}

/** Presence calls. */
export class Presence {
  readonly #client: RTMClient;

  constructor(client: RTMClient) {
    this.#client = client;
  }

  /** The users in a channel (a page of them), with their states if asked. */
  async whoNow(channelName: string, channelType: ChannelType, options?: WhoNowOptions): Promise<WhoNowResponse> {
    const op = 'whoNow';
    const r = expect(op, await this.#client.call(op, {
      kind: 'WhoNow',
      channelType: wireChannelType(op, channelType),
      channel: channelName,
      includeUserId: options?.includedUserId ?? true,
      includeState: options?.includedState ?? false,
      page: options?.page ?? '',
    }), 'WhoNow');
    return {
      timestamp: r.timestamp,
      totalOccupancy: r.totalOccupancy,
      occupants: r.occupants.map((u) => ({ userId: u.userId, states: { ...u.states }, statesCount: Object.keys(u.states).length })),
      nextPage: r.nextPage,
    };
  }

  /** The same as `whoNow`. */
  getOnlineUsers(channelName: string, channelType: ChannelType, options?: GetOnlineUsersOptions): Promise<GetOnlineUsersResponse> {
    return this.whoNow(channelName, channelType, options);
  }

  /** The channels a user is in (`""`: this user). */
  async whereNow(userId: string): Promise<WhereNowResponse> {
    const r = expect('whereNow', await this.#client.call('whereNow', { kind: 'WhereNow', userId: userId || this.#client.userId }), 'WhereNow');
    return {
      timestamp: r.timestamp,
      channels: r.channels.map((c) => ({ channelName: c.channelName, channelType: channelTypeName(c.channelType) })),
      totalChannel: r.channels.length,
    };
  }

  /** The same as `whereNow`. */
  getUserChannels(userId: string): Promise<GetUserChannelsResponse> {
    return this.whereNow(userId);
  }

  /** Sets keys of this user's state in a channel (merged with the keys it has). */
  async setState(channelName: string, channelType: ChannelType, state: StateDetail): Promise<SetStateResponse> {
    const op = 'setState';
    const t = wireChannelType(op, channelType);
    const states: StateDetail = {};
    for (const [k, v] of Object.entries(state ?? {})) {
      if (typeof v !== 'string') throw rtmError(op, Code.INVALID_PARAMETER, `state values are strings (key ${k})`);
      Object.defineProperty(states, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    const r = await this.#client.call(op, { kind: 'SetState', channelType: t, channel: channelName, states });
    const cache = this.#client.session?.cache;
    if (cache) {
      const key = `${t}:${channelName}`;
      const had = cache.states.get(key)?.states ?? {};
      cache.states.set(key, { channelType: t, channel: channelName, states: { ...had, ...states } });
    }
    return { timestamp: r.timestamp };
  }

  /** A user's state in a channel. */
  async getState(userId: string, channelName: string, channelType: ChannelType): Promise<GetStateResponse> {
    const op = 'getState';
    const r = expect(op, await this.#client.call(op, { kind: 'GetState', channelType: wireChannelType(op, channelType), channel: channelName, userId }), 'GetState');
    return { timestamp: r.timestamp, userId: r.userId, states: { ...r.states }, statesCount: Object.keys(r.states).length };
  }

  /** Removes keys of this user's state (all of them without `options.states`). */
  async removeState(channelName: string, channelType: ChannelType, options?: RemoveStateOptions): Promise<RemoveStateResponse> {
    const op = 'removeState';
    const t = wireChannelType(op, channelType);
    const keys = options?.states ?? [];
    const r = await this.#client.call(op, { kind: 'RemoveState', channelType: t, channel: channelName, keys });
    const cached = this.#client.session?.cache.states.get(`${t}:${channelName}`);
    if (cached) {
      if (keys.length === 0) cached.states = {};
      else for (const k of keys) delete cached.states[k];
    }
    return { timestamp: r.timestamp };
  }
}
