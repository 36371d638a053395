import type { LoginLimits, Request } from './model.js';
import { struct, string, u32, union } from './schema.js';
export const a = struct<LoginLimits>('x', { maxMessageSize: string, maxSubscriptions: u32, publishRate: u32, maxFrameLen: u32 });
export const b = struct<LoginLimits>('x', { maxMessageSize: u32, maxSubscriptions: u32, publishRate: u32 });
export const c = union<Request>('x', { Logout: [1, {}] });
