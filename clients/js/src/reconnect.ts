// The reconnect schedule (docs/protocol.md §5.6), as pure functions so that it can be tested
// without waiting: attempts after 2, 4, 8, 16 and then every 30 s, each wait drawn between half
// the delay and all of it; SUSPENDED instead of DISCONNECTED after 2 minutes away.

/** Delay before the first attempt, in ms; it doubles after each failure. */
export const FIRST_RETRY_MS = 2_000;
/** Longest delay between attempts, and the delay while suspended. */
export const MAX_RETRY_MS = 30_000;
/** How long the link stays DISCONNECTED before it is SUSPENDED. */
export const SUSPEND_AFTER_MS = 120_000;

/** The wait for a scheduled `delay` and a random number in [0, 1): in [delay / 2, delay]. */
export function jittered(delayMs: number, random: number): number {
  const half = Math.floor(delayMs / 2);
  return half + Math.floor(random * (delayMs - half + 1));
}

/**
 * After a failed attempt, `awayMs` after the connection was lost and with `delayMs` the
 * delay as scheduled before it: the state to report and the next scheduled delay.
 */
export function afterFailure(awayMs: number, delayMs: number): { state: 'DISCONNECTED' | 'SUSPENDED'; nextDelayMs: number } {
  if (awayMs >= SUSPEND_AFTER_MS) return { state: 'SUSPENDED', nextDelayMs: MAX_RETRY_MS };
  return { state: 'DISCONNECTED', nextDelayMs: Math.min(delayMs * 2, MAX_RETRY_MS) };
}

/** Clamps `value` (seconds) into [min, max], or gives `fallback` when it is not a number. */
export function clampSeconds(value: number | undefined, min: number, max: number, fallback: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) return fallback;
  return Math.min(max, Math.max(min, Math.round(value)));
}
