// `rtm.history`: stored messages of a channel or a conversation (docs/protocol.md §5.12).

import type { RTMClient } from './client.js';
import { Code, rtmError } from './errors.js';
import { fromPayload } from './mapping.js';
import { expect, wireChannelType } from './presence.js';
import type { GetHistoryMessageOptions, GetMessagesResponse, HistoryChannelType } from './types.js';

/** History calls. */
export class History {
  readonly #client: RTMClient;

  constructor(client: RTMClient) {
    this.#client = client;
  }

  /** A page of stored messages, newest first, older than `start` and not older than `end`. */
  async getMessages(channelName: string, channelType: HistoryChannelType, options?: GetHistoryMessageOptions): Promise<GetMessagesResponse> {
    const op = 'getMessages';
    const t = wireChannelType(op, channelType);
    if (t === 2) throw rtmError(op, Code.INVALID_CHANNEL_TYPE, 'stream channels keep no history');
    const r = expect(op, await this.#client.call(op, {
      kind: 'GetMessages',
      channelType: t,
      channel: channelName,
      messageCount: options?.messageCount ?? 100,
      start: options?.start ?? 0,
      end: options?.end ?? 0,
    }), 'Messages');
    const cipher = this.#client.cipher;
    const messageList = await Promise.all(
      r.messages.map(async (m) => ({
        ...fromPayload(cipher ? await cipher.open(m.message) : m.message),
        customType: m.customType,
        publisher: m.publisher,
        timestamp: m.timestamp,
      })),
    );
    return { timestamp: r.timestamp, messageList, count: messageList.length, newStart: r.newStart };
  }
}
