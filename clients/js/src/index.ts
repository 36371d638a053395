// rtm-sdk: the Signaling Web API (agora-rtm-sdk 2.x) for a self-hosted rtm server, in browsers
// and Node. `import AgoraRTM from 'rtm-sdk'` where an application had
// `import AgoraRTM from 'agora-rtm-sdk'`, and point `privateConfig.accessPointHosts` at the
// server. Importing touches no browser global (safe during server-side rendering).

import { RTMClient, VERSION } from './client.js';
import * as ConstantsType from './constants-type.js';
import type { AreaCode } from './constants.js';
import { RTMBaseError } from './errors.js';

export { RTMClient, VERSION } from './client.js';
export { StreamChannel as RTMStreamChannel } from './stream-channel.js';
export { Presence as RTMPresence } from './presence.js';
export { Storage as RTMStorage } from './storage.js';
export { Lock as RTMLock } from './lock.js';
export { History as RTMHistory } from './history.js';
export { RTMBaseError, errorName } from './errors.js';
export { ERROR_NAMES } from './error-codes.js';
export { RTMEvents } from './events.js';
export { RTMStreamChannelStatusCode } from './constants.js';
export { ConstantsType };
export type * from './types.js';

const parameters = new Map<unknown, unknown>();

/** The default export: what `AgoraRTM` is in the reference. */
export interface IAgoraRTM {
  BUILD: string;
  RTM: typeof RTMClient;
  VERSION: string;
  /** Accepted and ignored: an rtm server is where `accessPointHosts` says. */
  setArea(options: { areaCodes: AreaCode[]; excludedArea?: AreaCode }): void;
  constantsType: typeof ConstantsType;
  getParameter(key: unknown): unknown;
  setParameter(key: unknown, value: unknown): void;
  RTMBaseError: typeof RTMBaseError;
}

const AgoraRTM: IAgoraRTM = {
  BUILD: `rtm-sdk ${VERSION}`,
  RTM: RTMClient,
  VERSION,
  setArea: () => undefined,
  constantsType: ConstantsType,
  getParameter: (key) => parameters.get(key),
  setParameter: (key, value) => {
    parameters.set(key, value);
  },
  RTMBaseError,
};

export { RTMClient as RTM };
export default AgoraRTM;
