// Support for the SDK's end-to-end tests: a real rtm-server on free ports with a temporary data
// directory (and an optional TOML configuration), a TCP relay that can cut every connection
// abruptly (to test resume), tokens from `rtm-server token`, and helpers that wait for events
// with a deadline. Nothing here sleeps to wait for something: every wait is on a condition or
// an event, and fails with a message saying what it waited for.
//
//   RTM_SERVER_BIN  the server binary (default <repo>/target/debug/rtm-server)

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import AgoraRTM from '../../dist/esm/index.js';

export { AgoraRTM };

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const REPO = path.resolve(HERE, '..', '..', '..', '..');
/** The server binary. */
export const SERVER_BIN = process.env.RTM_SERVER_BIN || path.join(REPO, 'target', 'debug', 'rtm-server');
/** The default deadline of one wait. */
export const DEADLINE_MS = 10_000;

// ---- waiting ---------------------------------------------------------------------------------

/**
 * Polls `check` (which returns a truthy value when done) until `ms` pass; resolves with that
 * value, or rejects saying what it waited for (and the last error `check` threw). An error with
 * `fatal: true` ends the wait at once.
 */
export async function waitFor(what, check, ms = DEADLINE_MS, every = 20) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      if (e?.fatal) throw e;
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** `promise`, or a rejection saying what it waited for once `ms` pass. */
export function withDeadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The next `name` event of `client` for which `predicate` is true (every one without a
 * predicate). Listens from the call on: call it before the action that causes the event.
 */
export function nextEvent(client, name, predicate = () => true, ms = DEADLINE_MS) {
  let listener;
  let timer;
  const seen = [];
  return new Promise((resolve, reject) => {
    listener = (e) => {
      seen.push(e);
      let ok;
      try {
        ok = predicate(e);
      } catch (err) {
        reject(err);
        return;
      }
      if (ok) resolve(e);
    };
    client.addEventListener(name, listener);
    timer = setTimeout(() => {
      reject(new Error(`timed out after ${ms / 1000} s waiting for a "${name}" event of ${client.userId}` +
        `${predicate.name ? ` (${predicate.name})` : ''}; saw ${seen.length}: ${brief(seen)}`));
    }, ms);
  }).finally(() => {
    clearTimeout(timer);
    client.removeEventListener(name, listener);
  });
}

/** Resolves (with nothing) if no `name` event matching `predicate` comes within `ms`; rejects if one does. */
export function noEvent(client, name, predicate = () => true, ms = 500) {
  let listener;
  let timer;
  return new Promise((resolve, reject) => {
    listener = (e) => {
      if (predicate(e)) reject(new Error(`unexpected "${name}" event of ${client.userId}: ${brief([e])}`));
    };
    client.addEventListener(name, listener);
    timer = setTimeout(resolve, ms);
  }).finally(() => {
    clearTimeout(timer);
    client.removeEventListener(name, listener);
  });
}

/**
 * Records every `name` event of `client` (that `filter` keeps) from now on:
 * `{ events, until(what, check, ms), count(n, ms), stop() }`.
 */
export function record(client, name, filter = () => true) {
  const events = [];
  const listener = (e) => {
    if (filter(e)) events.push(e);
  };
  client.addEventListener(name, listener);
  return {
    events,
    /** Waits until `check(events)` is truthy. */
    until(what, check, ms = DEADLINE_MS) {
      return waitFor(`${what} (${client.userId} has ${events.length} "${name}" events: ${brief(events.slice(-5))})`, () => check(events), ms);
    },
    /** Waits until at least `n` events were recorded. */
    count(n, ms = DEADLINE_MS) {
      return this.until(`${n} "${name}" events`, (ev) => ev.length >= n && ev, ms);
    },
    stop() {
      client.removeEventListener(name, listener);
    },
  };
}

/** A short text of events, for failure messages. */
export function brief(events) {
  return events
    .map((e) => JSON.stringify(e, (k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)).slice(0, 300))
    .join(' | ') || '(none)';
}

/** The rejection of `promise` (fails if it resolves). */
export async function rejection(promise, what = 'the call') {
  try {
    const v = await promise;
    throw Object.assign(new Error(`${what} succeeded (${brief([v])}) but was expected to fail`), { unexpected: true });
  } catch (e) {
    if (e?.unexpected) throw e;
    return e;
  }
}

// ---- ports and HTTP --------------------------------------------------------------------------

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** GET `url`: `{ status, body }`. */
export function httpGet(url, ms = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: ms, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${ms} ms`)));
    req.on('error', reject);
  });
}

// ---- the server ------------------------------------------------------------------------------

/**
 * Starts rtm-server on free ports with a temporary data directory; `config` is the text of a
 * TOML configuration (without one, any App ID is served without a token). Resolves once the
 * server answers on its WebSocket port:
 * `{ pid, udpPort, tcpPort, wsUrl, quicAddr, dataDir, certPath, log(), stop() }`.
 */
export async function startServer({ config } = {}) {
  if (!fs.existsSync(SERVER_BIN)) {
    throw new Error(`rtm-server not found at ${SERVER_BIN}: build it (cargo build -p rtm-server) or set RTM_SERVER_BIN`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rtm-sdk-e2e-'));
  const dataDir = path.join(tmp, 'data');
  fs.mkdirSync(dataDir);
  // Port 0: the system picks free ports, read back from the server's log (a port found free
  // here and bound later could be taken meanwhile by another test running beside this one).
  const args = ['--listen', '127.0.0.1:0', '--websocket-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (config !== undefined) {
    const file = path.join(tmp, 'rtm.toml');
    fs.writeFileSync(file, config);
    args.push('--config', file);
  }
  let logText = '';
  let exited = null;
  const child = spawn(SERVER_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    // The server's own lines at info at least: they say where it listens.
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: `${process.env.RUST_LOG ?? 'info'},rtm_server=info` },
  });
  const keep = (chunk) => { logText = (logText + chunk).slice(-40_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (e) => {
      exited = { error: e.message };
      resolve(exited);
    });
  });

  const server = {
    pid: child.pid,
    udpPort: 0,
    tcpPort: 0,
    wsUrl: '',
    quicAddr: '',
    dataDir,
    certPath: path.join(dataDir, 'cert.pem'),
    log: () => logText,
    /** Stops the server by its PID (SIGTERM, then SIGKILL) and removes its directory. */
    async stop() {
      if (!exited && child.pid) {
        const kill = (signal) => {
          try {
            process.kill(child.pid, signal);
          } catch {
            // already gone
          }
        };
        kill('SIGTERM');
        const stopped = await withDeadline(exit, 10_000, 'rtm-server to exit after SIGTERM').catch(() => false);
        if (!stopped) {
          kill('SIGKILL');
          await withDeadline(exit, 5_000, 'rtm-server to exit after SIGKILL').catch(() => undefined);
        }
      }
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };

  try {
    const [udpPort, tcpPort] = await waitFor('rtm-server to say where it listens', () => {
      if (exited) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(exited)}`), { fatal: true });
      const udp = /listening on 127\.0\.0\.1:(\d+)/.exec(logText);
      const tcp = /WebSocket wss?:\/\/127\.0\.0\.1:(\d+)/.exec(logText);
      return udp && tcp && [Number(udp[1]), Number(tcp[1])];
    }, 20_000, 20);
    Object.assign(server, {
      udpPort,
      tcpPort,
      wsUrl: `ws://127.0.0.1:${tcpPort}/rtm`,
      quicAddr: `127.0.0.1:${udpPort}`,
    });
    const hashUrl = `http://127.0.0.1:${tcpPort}/rtm/certificate-hash`;
    await waitFor(`rtm-server to answer GET ${hashUrl}`, async () => {
      if (exited) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(exited)}`), { fatal: true });
      const res = await httpGet(hashUrl);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.body.slice(0, 200)}`);
      return true;
    }, 20_000, 50);
  } catch (e) {
    await server.stop();
    throw new Error(`${e.message}\n--- server log ---\n${logText}`);
  }
  return server;
}

// ---- tokens ----------------------------------------------------------------------------------

/** A Signaling token from `rtm-server token` (`channel`: an RTC token for that stream channel). */
export function makeToken({ appId, certificate, userId, expire = 3600, channel }) {
  const args = ['token', '--app-id', appId, '--app-certificate', certificate, '--user-id', userId, '--expire', String(expire)];
  if (channel !== undefined) args.push('--channel', channel);
  return execFileSync(SERVER_BIN, args, { encoding: 'utf8', timeout: 10_000 }).trim();
}

// ---- the relay -------------------------------------------------------------------------------

/**
 * A TCP relay on a free port to `targetPort` (the server's WebSocket port):
 * `{ port, url, connections, accepted, cut(), refuse(on), pause(on), toClient(), close() }`.
 * - `cut()` destroys every relayed socket abruptly (a TCP reset, no WebSocket close frame) and
 *   leaves the relay accepting new ones.
 * - `refuse(true)` makes it reset every new connection at once (a server that cannot be
 *   reached), until `refuse(false)`.
 * - `pause(true)` stops forwarding what the server sends (it stays in the relay: frames the
 *   server wrote and the client never got), until `pause(false)` or a `cut()` drops it.
 * - `dropAfterUpgrade(true)` lets new connections through the WebSocket upgrade and resets
 *   them as soon as the client sends anything after it (a connection lost during the login or
 *   resume handshake), until `dropAfterUpgrade(false)`.
 * - `toClient()` is every byte relayed from the server to clients so far (a Buffer).
 */
export async function startRelay(targetPort, targetHost = '127.0.0.1') {
  const pairs = new Set();
  const down = [];
  let accepted = 0;
  let refusing = false;
  let paused = false;
  let dropping = false;
  const kill = (s) => {
    if (s.destroyed) return;
    // A reset while a graceful shutdown is pending (the socket ends itself when its peer does)
    // can leave the handle referenced and make Node spin at exit: destroy those instead.
    if (typeof s.resetAndDestroy === 'function' && !s.writableEnded && !s.connecting) s.resetAndDestroy();
    else s.destroy();
  };
  const srv = net.createServer((client) => {
    if (refusing) {
      client.on('error', () => undefined);
      kill(client);
      return;
    }
    accepted += 1;
    const upstream = net.connect(targetPort, targetHost);
    const pair = { client, upstream, held: [] };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      kill(client);
      kill(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    // With dropAfterUpgrade: reset once the client sends more after the server's upgrade answer.
    let upgraded = false;
    const drops = dropping;
    client.on('data', (chunk) => {
      if (drops && upgraded) {
        drop();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (drops && !upgraded && chunk.includes('\r\n\r\n')) upgraded = true;
      if (paused) {
        pair.held.push(chunk);
        return;
      }
      down.push(chunk);
      client.write(chunk);
    });
  });
  await new Promise((resolve, reject) => {
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = srv.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/rtm`,
    /** Connections relayed now. */
    get connections() {
      return pairs.size;
    },
    /** Connections accepted (and relayed) since the start. */
    get accepted() {
      return accepted;
    },
    cut() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        kill(client);
        kill(upstream);
      }
      pairs.clear();
      return n;
    },
    refuse(on) {
      refusing = on;
    },
    dropAfterUpgrade(on) {
      dropping = on;
    },
    pause(on) {
      paused = on;
      if (!on) {
        for (const pair of pairs) {
          for (const chunk of pair.held.splice(0)) {
            down.push(chunk);
            pair.client.write(chunk);
          }
        }
      }
    },
    /** Bytes the relay holds back while paused. */
    get held() {
      let n = 0;
      for (const pair of pairs) for (const c of pair.held) n += c.length;
      return n;
    },
    toClient() {
      return Buffer.concat(down);
    },
    close() {
      this.cut();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}

// ---- clients ---------------------------------------------------------------------------------

/** An RTMConfig that reaches `urls` (a URL or a list) over WebSocket, with `extra` merged in. */
export function rtmConfig(urls, extra = {}) {
  return {
    ...extra,
    privateConfig: { serviceType: ['MESSAGE', 'STREAM'], accessPointHosts: Array.isArray(urls) ? urls : [urls], ...(extra.privateConfig ?? {}) },
  };
}

/**
 * Makes clients and logs every one of them out at the end (a client left logged in keeps the
 * test process alive with its heartbeat).
 */
export class Clients {
  #made = [];

  constructor(defaultUrl, appId = 'e2eapp') {
    this.defaultUrl = defaultUrl;
    this.appId = appId;
  }

  /** A new client of `userId` (not logged in); `extra` is merged into its RTMConfig. */
  make(userId, extra = {}, { url = this.defaultUrl, appId = this.appId } = {}) {
    const c = new AgoraRTM.RTM(appId, userId, rtmConfig(url, extra));
    this.#made.push(c);
    return c;
  }

  /** A new client of `userId`, logged in. */
  async login(userId, extra = {}, where = {}, loginOptions) {
    const c = this.make(userId, extra, where);
    await withDeadline(c.login(loginOptions), DEADLINE_MS, `${userId} to log in`);
    return c;
  }

  /** Logs out every client made (those not logged in are skipped). */
  async closeAll() {
    const made = this.#made.splice(0);
    await Promise.all(made.map((c) => withDeadline(c.logout(), 5_000, `${c.userId} to log out`).catch(() => undefined)));
  }
}

/** A user id or channel name unique in this process: `prefix` and a counter. */
let serial = 0;
export function uniq(prefix) {
  serial += 1;
  return `${prefix}${serial}`;
}

/** Bytes 0..n-1 (mod 256) starting at `from`. */
export function bytes(n, from = 0) {
  return Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);
}

/** Whether `haystack` contains the bytes of `needle`. */
export function containsBytes(haystack, needle) {
  const h = Buffer.from(haystack);
  return h.indexOf(Buffer.from(needle)) !== -1;
}

/**
 * Checks that `e` is what a failed call rejects with: an `RTMBaseError` (an `Error`) with the
 * error code `code` in `errorCode` and `code`, a reason, and `operation` when given.
 */
export function assertRtmError(e, code, operation) {
  assert.ok(e instanceof AgoraRTM.RTMBaseError, `expected an RTMBaseError, got ${e?.stack ?? e}`);
  assert.ok(e instanceof Error, 'an RTMBaseError is an Error');
  assert.equal(e.errorCode, code, `errorCode of ${e.message}`);
  assert.equal(e.code, code, 'code equals errorCode');
  assert.equal(e.error, true);
  assert.equal(typeof e.reason, 'string');
  assert.ok(e.reason.length > 0, 'the error has a reason');
  if (operation) assert.equal(e.operation, operation);
}

/** Starts a server with `config` and a `Clients` for `appId` on it (for a suite's `before`). */
export async function startWithClients(config, appId) {
  const server = await startServer({ config });
  return { server, clients: new Clients(server.wsUrl, appId) };
}

/** Logs out the clients and stops the server that `startWithClients` made (for `after`). */
export async function stopWithClients(server, clients) {
  await clients?.closeAll();
  await server?.stop();
}
