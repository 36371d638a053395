// What the browser tests share.

/**
 * Polls `check` (which returns a truthy value when done) until `ms` pass; says what it waited
 * for. An error thrown with `fatal: true` ends the wait at once.
 */
export async function waitFor(what, check, { ms = 30_000, every = 100 } = {}) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}
