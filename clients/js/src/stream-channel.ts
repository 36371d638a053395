// Stream channels: joined rather than subscribed; members publish in topics, and receive
// the topic messages of the publishers they subscribe to (docs/protocol.md §5.7).

import type { RTMClient } from './client.js';
import type * as wire from './codec/model.js';
import { expect } from './presence.js';
import type {
  GetSubscribedUserListResponse,
  JoinChannelResponse,
  JoinOptions,
  joinTopicOptions,
  JoinTopicResponse,
  LeaveChannelResponse,
  LeaveTopicResponse,
  PublishTopicMessageOptions,
  PublishTopicMessageResponse,
  SubscribeTopicOptions,
  SubscribeTopicResponse,
  UnsubscribeTopicOptions,
  UnsubscribeTopicResponse,
} from './types.js';

const QOS: Record<string, wire.TopicQos> = { ORDERED: 'Ordered', UNORDERED: 'Unordered' };
const PRIORITY: Record<string, wire.TopicPriority> = { HIGHEST: 'Highest', HIGH: 'High', NORMAL: 'Normal', LOW: 'Low' };

/** A stream channel (made by `rtm.createStreamChannel`). */
export class StreamChannel {
  readonly #client: RTMClient;
  readonly #name: string;

  constructor(client: RTMClient, channelName: string) {
    this.#client = client;
    this.#name = channelName;
  }

  /** The channel's name. */
  get channelName(): string {
    return this.#name;
  }

  #cache() {
    return this.#client.session?.cache.streams.get(this.#name);
  }

  /** Joins the channel (`options.token`: an RTC token for apps with a certificate). */
  async join(options?: JoinOptions): Promise<JoinChannelResponse> {
    const wireOptions: wire.JoinOptions = {
      token: options?.token ?? '',
      withPresence: options?.withPresence ?? true,
      beQuiet: options?.beQuiet ?? false,
      withMetadata: options?.withMetadata ?? false,
      withLock: options?.withLock ?? false,
    };
    const r = await this.#client.call('join', { kind: 'Join', channel: this.#name, options: wireOptions });
    this.#client.session?.cache.streams.set(this.#name, { options: wireOptions, topics: new Map(), subscriptions: new Map() });
    return { timestamp: r.timestamp };
  }

  /** Leaves the channel. */
  async leave(): Promise<LeaveChannelResponse> {
    const r = await this.#client.call('leave', { kind: 'Leave', channel: this.#name });
    this.#client.session?.cache.streams.delete(this.#name);
    this.#client.session?.cache.states.delete(`2:${this.#name}`);
    return { timestamp: r.timestamp };
  }

  /** Registers as a publisher of a topic. */
  async joinTopic(topicName: string, options?: joinTopicOptions): Promise<JoinTopicResponse> {
    const meta = options?.meta;
    const wireOptions: wire.JoinTopicOptions = {
      meta: meta === undefined || meta === null ? '' : typeof meta === 'string' ? meta : JSON.stringify(meta),
      qos: QOS[String(options?.qos ?? 'ORDERED').toUpperCase()] ?? 'Ordered',
      priority: PRIORITY[String(options?.priority ?? 'NORMAL').toUpperCase()] ?? 'Normal',
    };
    const r = await this.#client.call('joinTopic', { kind: 'JoinTopic', channel: this.#name, topic: topicName, options: wireOptions });
    this.#cache()?.topics.set(topicName, wireOptions);
    return { timestamp: r.timestamp, topicName };
  }

  /** Stops publishing in a topic. */
  async leaveTopic(topicName: string): Promise<LeaveTopicResponse> {
    const r = await this.#client.call('leaveTopic', { kind: 'LeaveTopic', channel: this.#name, topic: topicName });
    this.#cache()?.topics.delete(topicName);
    return { timestamp: r.timestamp, topicName };
  }

  /** Publishes in a topic joined before. */
  async publishTopicMessage(topicName: string, message: string | Uint8Array, options?: PublishTopicMessageOptions): Promise<PublishTopicMessageResponse> {
    const op = 'publishTopicMessage';
    const customType = options?.customType ?? '';
    const request = this.#client.sealed(op, message).then((payload): wire.Request => ({ kind: 'PublishTopic', channel: this.#name, topic: topicName, message: payload, customType }));
    const r = await this.#client.call(op, request);
    return { timestamp: r.timestamp, topicName };
  }

  /** Subscribes to publishers of a topic (adds to those subscribed before). */
  async subscribeTopic(topicName: string, options?: SubscribeTopicOptions): Promise<SubscribeTopicResponse> {
    const op = 'subscribeTopic';
    const r = expect(op, await this.#client.call(op, { kind: 'SubscribeTopic', channel: this.#name, topic: topicName, users: options?.users ?? [] }), 'SubscribeTopic');
    const cache = this.#cache();
    if (cache) {
      const set = cache.subscriptions.get(topicName) ?? new Set<string>();
      for (const u of r.succeedUsers) set.add(u);
      cache.subscriptions.set(topicName, set);
    }
    return {
      timestamp: r.timestamp,
      topicName,
      succeedUsers: r.succeedUsers,
      failedUsers: r.failedUsers.map((f) => f.user),
      failedDetails: r.failedUsers.map((f) => ({ timestamp: r.timestamp, topicName, user: f.user, errorCode: f.errorCode, reason: f.reason })),
    };
  }

  /** Unsubscribes from publishers of a topic (from the whole topic without `options.users`). */
  async unsubscribeTopic(topicName: string, options?: UnsubscribeTopicOptions): Promise<UnsubscribeTopicResponse> {
    const users = options?.users ?? [];
    const r = await this.#client.call('unsubscribeTopic', { kind: 'UnsubscribeTopic', channel: this.#name, topic: topicName, users });
    const cache = this.#cache();
    if (cache) {
      if (users.length === 0) cache.subscriptions.delete(topicName);
      else for (const u of users) cache.subscriptions.get(topicName)?.delete(u);
    }
    return { timestamp: r.timestamp };
  }

  /** The publishers of a topic this client subscribes to (from what it remembers). */
  getSubscribedUserList(topicName: string): GetSubscribedUserListResponse {
    return { timestamp: Date.now(), topicName, subscribed: [...(this.#cache()?.subscriptions.get(topicName) ?? [])] };
  }
}
