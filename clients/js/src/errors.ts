// Errors: what a failed call rejects with (the reference's `RTMBaseError`, an `Error` carrying
// `errorCode`, `code`, `reason` and `operation`).

import { ERROR_NAMES } from './error-codes.js';
import type { ErrorInfo, IErrorInfo } from './types.js';

/** Error codes the SDK itself uses (the full list is `ERROR_NAMES`). */
export const Code = {
  NOT_LOGIN: -10002,
  INVALID_APP_ID: -10003,
  INVALID_USER_ID: -10006,
  INVALID_CHANNEL_NAME: -10008,
  LOGIN_TIMEOUT: -10011,
  LOGIN_REJECTED: -10012,
  INVALID_PARAMETER: -10014,
  DUPLICATE_OPERATION: -10017,
  INVALID_CHANNEL_TYPE: -10019,
  INVALID_ENCRYPTION_PARAMETER: -10020,
  LOGIN_CANCELED: -10023,
  INVALID_PRIVATE_CONFIG: -10024,
  NOT_CONNECTED: -10025,
  CHANNEL_NOT_JOINED: -11001,
  CHANNEL_IN_ERROR_STATE: -11006,
  CHANNEL_INVALID_TOPIC_NAME: -11008,
  CHANNEL_INVALID_MESSAGE: -11009,
  CHANNEL_MESSAGE_LENGTH_EXCEED_LIMITATION: -11010,
  CHANNEL_PUBLISH_MESSAGE_TIMEOUT: -11026,
  CHANNEL_ENCRYPT_MESSAGE_FAILED: -11023,
  HISTORY_OPERATION_TIMEOUT: -15003,
} as const;

/** The reference's name of an error code (`UNKNOWN` for a number it does not list). */
export function errorName(code: number): string {
  return ERROR_NAMES[code] ?? 'UNKNOWN';
}

/**
 * What every failed call rejects with: `errorCode` (and `code`) the reference's error number,
 * `reason` what went wrong, `operation` the call (`'publish'`, `'login'`, ...).
 */
export class RTMBaseError extends Error implements ErrorInfo {
  originalError?: Error;
  code?: number;
  serverCode?: number;
  error: boolean;
  reason: string;
  operation: string;
  errorCode: number;

  /**
   * `args` is the reason (or a format string and its values, as the reference allows);
   * `errorInfo` the code, or an object with it.
   */
  constructor(operation: string, args?: string | readonly [string, ...unknown[]], errorInfo?: IErrorInfo | string | number) {
    const reason = typeof args === 'string' ? args : args ? args.map(String).join(' ') : '';
    let code = 0;
    let serverCode: number | undefined;
    let original: unknown;
    if (typeof errorInfo === 'number') code = errorInfo;
    else if (typeof errorInfo === 'string') code = Number(errorInfo) || 0;
    else if (errorInfo) {
      code = errorInfo.code ?? 0;
      serverCode = errorInfo.serverCode;
      original = errorInfo.originalError;
    }
    super(`${operation} failed: ${reason} (${code} ${errorName(code)})`);
    this.name = 'RTMBaseError';
    this.error = true;
    this.operation = operation;
    this.reason = reason;
    this.errorCode = code;
    this.code = code;
    if (serverCode !== undefined) this.serverCode = serverCode;
    if (original instanceof Error) this.originalError = original;
  }
}

/** A rejection for `operation` with `code` and `reason`. */
export function rtmError(operation: string, code: number, reason: string, serverCode?: number): RTMBaseError {
  return new RTMBaseError(operation, reason, serverCode === undefined ? { code } : { code, serverCode });
}
