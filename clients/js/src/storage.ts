// `rtm.storage`: channel and user metadata with revisions (docs/protocol.md §5.9).

import type { RTMClient } from './client.js';
import type * as wire from './codec/model.js';
import { Code, rtmError } from './errors.js';
import { storageData } from './mapping.js';
import { expect, wireChannelType } from './presence.js';
import type {
  ChannelType,
  GetChannelMetadataResponse,
  GetUserMetadataOptions,
  GetUserMetadataResponse,
  MetadataItem,
  MetadataOptions,
  RemoveChannelMetadataOptions,
  RemoveChannelMetadataResponse,
  RemoveUserMetadataOptions,
  RemoveUserMetadataResponse,
  SetChannelMetadataResponse,
  SetOrUpdateUserMetadataOptions,
  SetUserMetadataResponse,
  SubscribeUserMetaResponse,
  UnsubscribeUserMetaResponse,
  UpdateChannelMetadataResponse,
  UpdateUserMetadataResponse,
} from './types.js';

function items(operation: string, data: MetadataItem[] | undefined): wire.MetadataItem[] {
  if (data !== undefined && !Array.isArray(data)) throw rtmError(operation, Code.INVALID_PARAMETER, 'metadata items are an array');
  return (data ?? []).map((i) => ({ key: String(i.key), value: i.value === undefined ? '' : String(i.value), revision: i.revision ?? -1 }));
}

function options(o: MetadataOptions | undefined): wire.MetadataOptions {
  return { majorRevision: o?.majorRevision ?? -1, lockName: o?.lockName ?? '', addTimestamp: o?.addTimeStamp ?? false, addUserId: o?.addUserId ?? false };
}

/** Metadata calls. */
export class Storage {
  readonly #client: RTMClient;

  constructor(client: RTMClient) {
    this.#client = client;
  }

  async #write(operation: string, op: wire.MetadataOp, target: wire.MetadataTarget, data: MetadataItem[] | undefined, o: MetadataOptions | undefined): Promise<{ timestamp: number; totalCount: number }> {
    const r = expect(operation, await this.#client.call(operation, { kind: 'WriteMetadata', op, target, items: items(operation, data), options: options(o) }), 'MetadataWritten');
    return { timestamp: r.timestamp, totalCount: r.totalCount };
  }

  #channel(operation: string, channelName: string, channelType: ChannelType): wire.MetadataTarget {
    return { kind: 'Channel', channelType: wireChannelType(operation, channelType), channel: channelName };
  }

  async setChannelMetadata(channelName: string, channelType: ChannelType, data: MetadataItem[], options?: MetadataOptions): Promise<SetChannelMetadataResponse> {
    const r = await this.#write('setChannelMetadata', 'Set', this.#channel('setChannelMetadata', channelName, channelType), data, options);
    return { ...r, channelName, channelType };
  }

  async updateChannelMetadata(channelName: string, channelType: ChannelType, data: MetadataItem[], options?: MetadataOptions): Promise<UpdateChannelMetadataResponse> {
    const r = await this.#write('updateChannelMetadata', 'Update', this.#channel('updateChannelMetadata', channelName, channelType), data, options);
    return { ...r, channelName, channelType };
  }

  async removeChannelMetadata(channelName: string, channelType: ChannelType, options?: RemoveChannelMetadataOptions): Promise<RemoveChannelMetadataResponse> {
    const r = await this.#write('removeChannelMetadata', 'Remove', this.#channel('removeChannelMetadata', channelName, channelType), options?.data, options);
    return { ...r, channelName, channelType };
  }

  async getChannelMetadata(channelName: string, channelType: ChannelType): Promise<GetChannelMetadataResponse> {
    const op = 'getChannelMetadata';
    const r = expect(op, await this.#client.call(op, { kind: 'GetMetadata', target: this.#channel(op, channelName, channelType) }), 'Metadata');
    return { ...storageData(r.data), timestamp: r.timestamp, channelName, channelType };
  }

  #user(userId: string | undefined): wire.MetadataTarget {
    return { kind: 'User', userId: userId || this.#client.userId };
  }

  async setUserMetadata(data: MetadataItem[], options?: SetOrUpdateUserMetadataOptions): Promise<SetUserMetadataResponse> {
    const target = this.#user(options?.userId);
    return { ...(await this.#write('setUserMetadata', 'Set', target, data, options)), userId: (target as { userId: string }).userId };
  }

  async updateUserMetadata(data: MetadataItem[], options?: SetOrUpdateUserMetadataOptions): Promise<UpdateUserMetadataResponse> {
    const target = this.#user(options?.userId);
    return { ...(await this.#write('updateUserMetadata', 'Update', target, data, options)), userId: (target as { userId: string }).userId };
  }

  async removeUserMetadata(options?: RemoveUserMetadataOptions): Promise<RemoveUserMetadataResponse> {
    const target = this.#user(options?.userId);
    return { ...(await this.#write('removeUserMetadata', 'Remove', target, options?.data, options)), userId: (target as { userId: string }).userId };
  }

  async getUserMetadata(options?: GetUserMetadataOptions): Promise<GetUserMetadataResponse> {
    const op = 'getUserMetadata';
    const userId = options?.userId || this.#client.userId;
    const r = expect(op, await this.#client.call(op, { kind: 'GetMetadata', target: { kind: 'User', userId } }), 'Metadata');
    return { ...storageData(r.data), timestamp: r.timestamp, userId };
  }

  /** Listens to a user's metadata changes (`storage` events). */
  async subscribeUserMetadata(userId: string): Promise<SubscribeUserMetaResponse> {
    const r = await this.#client.call('subscribeUserMetadata', { kind: 'SubscribeUserMetadata', userId });
    this.#client.session?.cache.userMetadata.add(userId);
    return { timestamp: r.timestamp, userId };
  }

  async unsubscribeUserMetadata(userId: string): Promise<UnsubscribeUserMetaResponse> {
    const r = await this.#client.call('unsubscribeUserMetadata', { kind: 'UnsubscribeUserMetadata', userId });
    this.#client.session?.cache.userMetadata.delete(userId);
    return { timestamp: r.timestamp, userId };
  }
}
