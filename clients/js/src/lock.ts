// `rtm.lock`: named locks of a channel (docs/protocol.md §5.10).

import type { RTMClient } from './client.js';
import type * as wire from './codec/model.js';
import { expect, wireChannelType } from './presence.js';
import type {
  AcquireLockOptions,
  AcquireLockResponse,
  ChannelType,
  GetLockResponse,
  LockOperationResponse,
  ReleaseLockResponse,
  RemoveLockResponse,
  RevokeLockResponse,
  SetLockOptions,
  SetLockResponse,
} from './types.js';

/** Lock calls. */
export class Lock {
  readonly #client: RTMClient;

  constructor(client: RTMClient) {
    this.#client = client;
  }

  async #op(operation: string, channelName: string, channelType: ChannelType, lockName: string, op: wire.LockOp): Promise<LockOperationResponse> {
    const t = wireChannelType(operation, channelType);
    // An acquire with retry waits for the lock as long as it takes: no timeout (it ends with
    // the answer, or with the connection).
    const timeoutMs = op.kind === 'Acquire' && op.retry ? 0 : undefined;
    const r = await this.#client.call(operation, { kind: 'Lock', channelType: t, channel: channelName, lockName, op }, timeoutMs);
    return { timestamp: r.timestamp, channelName, channelType, lockName };
  }

  /** Creates a lock (`ttl` in seconds, 10 to 300, 10 by default). */
  setLock(channelName: string, channelType: ChannelType, lockName: string, options?: SetLockOptions): Promise<SetLockResponse> {
    return this.#op('setLock', channelName, channelType, lockName, { kind: 'Set', ttl: options?.ttl ?? 10 });
  }

  /** Deletes a lock. */
  removeLock(channelName: string, channelType: ChannelType, lockName: string): Promise<RemoveLockResponse> {
    return this.#op('removeLock', channelName, channelType, lockName, { kind: 'Remove' });
  }

  /** Takes a lock; with `retry`, waits for it while another user holds it. */
  acquireLock(channelName: string, channelType: ChannelType, lockName: string, options?: AcquireLockOptions): Promise<AcquireLockResponse> {
    return this.#op('acquireLock', channelName, channelType, lockName, { kind: 'Acquire', retry: options?.retry ?? false });
  }

  /** Gives up a lock this user holds. */
  releaseLock(channelName: string, channelType: ChannelType, lockName: string): Promise<ReleaseLockResponse> {
    return this.#op('releaseLock', channelName, channelType, lockName, { kind: 'Release' });
  }

  /** Takes a lock away from `owner`. */
  revokeLock(channelName: string, channelType: ChannelType, lockName: string, owner: string): Promise<RevokeLockResponse> {
    return this.#op('revokeLock', channelName, channelType, lockName, { kind: 'Revoke', owner });
  }

  /** The locks of a channel. */
  async getLock(channelName: string, channelType: ChannelType): Promise<GetLockResponse> {
    const op = 'getLock';
    const r = expect(op, await this.#client.call(op, { kind: 'GetLocks', channelType: wireChannelType(op, channelType), channel: channelName }), 'Locks');
    return {
      timestamp: r.timestamp,
      totalLocks: r.locks.length,
      lockDetails: r.locks.map((l) => ({ lockName: l.lockName, owner: l.owner, ttl: l.ttl })),
      channelName,
      channelType,
    };
  }
}
