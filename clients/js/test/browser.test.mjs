// The chat example (examples/chat/) in a real browser: a headless Chromium loads the page,
// logs in, subscribes and chats with a Node client (this package's ESM build, over WebSocket),
// once over WebTransport and once over WebSocket: messages both ways, the presence list, the
// typing indicator (presence state), and a leave. Both runs also chat with the Rust client
// (rtm-testkit's js_peer example; over QUIC beside WebTransport, over WebSocket beside WebSocket).
//
// Needs dist/ built (node scripts/build.mjs), the server built (cargo build -p rtm-server) and
// Chromium. Run: cd clients/js && node --test test/browser.test.mjs
//   RTM_SERVER_BIN  the server binary (default <repo>/target/debug/rtm-server)
//   RTM_JS_PEER_BIN the Rust peer (default <repo>/target/debug/examples/js_peer; the part that
//                   needs it is skipped when it is missing: cargo build -p rtm-testkit --example js_peer)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   RTM_SCREENSHOT=1  save the page of the WebTransport run to docs/images/chat-example.png

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { httpGet } from './support/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..'); // clients/js: what the page server serves
const REPO = path.resolve(ROOT, '..', '..');
const IIFE = path.join(ROOT, 'dist', 'rtm-sdk.iife.min.js');
const ESM = path.join(ROOT, 'dist', 'esm', 'index.js');
const SERVER_BIN = process.env.RTM_SERVER_BIN || path.join(REPO, 'target', 'debug', 'rtm-server');
const JS_PEER_BIN = process.env.RTM_JS_PEER_BIN || path.join(REPO, 'target', 'debug', 'examples', 'js_peer');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO, 'docs', 'images', 'chat-example.png');
const APP_ID = 'rtmdemo';
/** The longest any single wait may take. */
const DEADLINE_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Rejects when `promise` takes longer than `ms`, saying what it waited for. */
function withDeadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` until it returns something truthy or `ms` pass. */
async function poll(what, check, { ms = DEADLINE_MS, every = 100 } = {}) {
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
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Everything a client reported, and waits for the first item that matches (seen before or after). */
class EventLog {
  items = [];
  #waiters = new Set();

  push(item) {
    this.items.push(item);
    for (const w of [...this.#waiters]) {
      if (safe(w.match, item)) {
        this.#waiters.delete(w);
        w.done(item);
      }
    }
  }

  wait(what, match, ms = DEADLINE_MS) {
    const seen = this.items.find((item) => safe(match, item));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { match, done: null };
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        const recent = this.items.slice(-8).map((i) => JSON.stringify(i)).join('\n  ');
        reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}; the last events:\n  ${recent || '(none)'}`));
      }, ms);
      w.done = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.#waiters.add(w);
    });
  }
}

function safe(match, item) {
  try {
    return Boolean(match(item));
  } catch {
    return false;
  }
}

const MIME = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json' };

/** Serves clients/js on 127.0.0.1 (a secure context, as WebTransport needs). */
function serveClients() {
  const server = http.createServer((req, res) => {
    let name;
    try {
      name = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch {
      name = '/';
    }
    if (name.endsWith('/')) name += 'index.html';
    const file = path.join(ROOT, name);
    if (!file.startsWith(ROOT + path.sep) || file.includes(`${path.sep}node_modules${path.sep}`) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** A client of this package (the ESM build, in Node: WebSocket) that records its events. */
async function nodeClient(AgoraRTM, userId, wsUrl) {
  const rtm = new AgoraRTM.RTM(APP_ID, userId, { privateConfig: { serviceType: ['MESSAGE'], accessPointHosts: [wsUrl] } });
  const events = new EventLog();
  for (const name of ['message', 'presence', 'linkState']) rtm.addEventListener(name, (e) => events.push({ event: name, ...e }));
  await withDeadline(rtm.login(), DEADLINE_MS, `${userId} (Node) to log in`);
  return { rtm, events, userId };
}

/** The Rust client: rtm-testkit's js_peer, driven over JSON lines (see its doc comment). */
class RustPeer {
  events = new EventLog();
  #pending = new Map();
  #nextId = 1;
  #exit = null;
  stderr = '';

  constructor(args) {
    this.child = spawn(JS_PEER_BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (c) => { this.stderr = (this.stderr + c).slice(-4000); });
    this.child.on('exit', (code, signal) => {
      this.#exit = { code, signal };
      for (const [, p] of this.#pending) p.reject(new Error(`js_peer exited (${code ?? signal}): ${this.stderr}`));
      this.#pending.clear();
      this.events.push({ exited: this.#exit });
    });
    this.child.on('error', (e) => this.events.push({ spawnError: e.message }));
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if ('id' in msg && this.#pending.has(msg.id)) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        p.resolve(msg);
      } else {
        this.events.push(msg);
      }
    });
  }

  /** Sends a command; resolves with its reply (rejects on `ok: false`). */
  async cmd(op, fields = {}) {
    if (this.#exit) throw new Error(`js_peer has exited (${JSON.stringify(this.#exit)}): ${this.stderr}`);
    const id = this.#nextId++;
    const reply = new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.child.stdin.write(`${JSON.stringify({ id, op, ...fields })}\n`);
    const r = await withDeadline(reply, DEADLINE_MS, `js_peer's reply to ${op}`);
    if (!r.ok) throw new Error(`js_peer ${op} failed: ${JSON.stringify(r)}`);
    return r;
  }

  async close() {
    if (this.#exit) return;
    this.child.stdin.end();
    const gone = await poll('js_peer to exit', () => this.#exit, { ms: 5000 }).catch(() => false);
    if (!gone) this.child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// The runs

const RUNS = [
  { name: 'WebTransport', transport: 'webtransport', tag: 'wt' },
  { name: 'WebSocket', transport: 'websocket', tag: 'ws' },
];

describe('the chat example in headless Chromium', () => {
  let server; // the rtm-server child
  let serverLog = '';
  let serverExit = null;
  let pageServer;
  let browser;
  let tmp;
  let dataDir;
  let AgoraRTM;
  const ports = {};
  let hash; // the server's certificate hash
  let wsUrl;
  let wtUrl;

  before(async () => {
    for (const [file, what] of [[IIFE, 'the IIFE bundle'], [ESM, 'the ESM build']]) {
      if (!fs.existsSync(file)) throw new Error(`${what} is missing (${path.relative(ROOT, file)}): build the package first, cd clients/js && node scripts/build.mjs`);
    }
    if (!fs.existsSync(SERVER_BIN)) throw new Error(`rtm-server not found at ${SERVER_BIN}: build it (cargo build -p rtm-server) or set RTM_SERVER_BIN`);
    if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM`);
    ({ default: AgoraRTM } = await import(pathToFileURL(ESM).href));

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rtm-chat-'));
    dataDir = path.join(tmp, 'data');
    fs.mkdirSync(dataDir);
    // Port 0, read back from the log: a probed free port could be taken before the bind.
    server = spawn(SERVER_BIN, ['--listen', '127.0.0.1:0', '--websocket-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--data-dir', dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', RUST_LOG: `${process.env.RUST_LOG ?? 'info'},rtm_server=info` },
    });
    const keep = (chunk) => { serverLog = (serverLog + chunk).slice(-20_000); };
    server.stdout.on('data', keep);
    server.stderr.on('data', keep);
    server.on('exit', (code, signal) => { serverExit = { code, signal }; });
    server.on('error', (e) => { serverExit = { error: e.message }; });
    [ports.udp, ports.tcp] = await poll('rtm-server to say where it listens', () => {
      if (serverExit) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(serverExit)}:\n${serverLog}`), { fatal: true });
      const udp = /listening on 127\.0\.0\.1:(\d+)/.exec(serverLog);
      const tcp = /WebSocket wss?:\/\/127\.0\.0\.1:(\d+)/.exec(serverLog);
      return udp && tcp && [Number(udp[1]), Number(tcp[1])];
    });

    const hashUrl = `http://127.0.0.1:${ports.tcp}/rtm/certificate-hash`;
    const answer = await poll(`rtm-server to answer GET ${hashUrl}`, async () => {
      if (serverExit) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(serverExit)}:\n${serverLog}`), { fatal: true });
      const res = await httpGet(hashUrl);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      return JSON.parse(res.body);
    });
    hash = answer.value;
    assert.match(hash, /^[0-9a-f]{64}$/);
    wsUrl = `ws://127.0.0.1:${ports.tcp}/rtm`;
    wtUrl = `https://127.0.0.1:${ports.udp}`;

    pageServer = await serveClients();
    const { default: puppeteer } = await import('puppeteer-core');
    browser = await withDeadline(puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      protocolTimeout: 60_000,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${path.join(tmp, 'chromium-profile')}`,
      ],
    }), 30_000, `Chromium (${CHROMIUM}) to start`);
  });

  after(async () => {
    if (browser) await withDeadline(browser.close(), 10_000, 'Chromium to close').catch(() => browser.process()?.kill('SIGKILL'));
    if (pageServer) {
      pageServer.closeAllConnections?.();
      await new Promise((r) => pageServer.close(r));
    }
    if (server && !serverExit && server.pid) {
      const kill = (signal) => { try { process.kill(server.pid, signal); } catch { /* gone */ } };
      kill('SIGTERM');
      if (!(await poll('rtm-server to exit', () => serverExit, { ms: 10_000 }).catch(() => false))) {
        kill('SIGKILL');
        await poll('rtm-server to exit after SIGKILL', () => serverExit, { ms: 5_000 }).catch(() => {});
      }
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const run of RUNS) {
    describe(`over ${run.name}`, () => {
      const alice = `alice-${run.tag}`; // the page
      const bob = `bob-${run.tag}`; // the Node client
      const carol = `carol-${run.tag}`; // the Rust client
      const channel = `room-${run.tag}`;
      let context;
      let page;
      let node; // { rtm, events, userId }
      const pageLog = [];

      /** The page's state and logs, for a failure message. */
      async function explain() {
        const st = page ? await page.evaluate(() => JSON.stringify(window.chatState, null, 2)).catch((e) => `(unreadable: ${e.message})`) : '(no page)';
        return `\n--- chatState ---\n${st}\n--- browser console ---\n${pageLog.join('\n') || '(nothing)'}\n--- server log (tail) ---\n${serverLog.slice(-3000)}`;
      }

      /** Waits until `fn(arg)` is truthy in the page. */
      async function pageWait(what, fn, arg) {
        try {
          await page.waitForFunction(fn, { timeout: DEADLINE_MS, polling: 100 }, arg);
        } catch (e) {
          throw new Error(`waiting for ${what} in the page: ${e.message}${await explain()}`);
        }
      }

      before(async () => {
        // The Node user is in the channel first, so the page's snapshot lists it.
        node = await nodeClient(AgoraRTM, bob, wsUrl);
        await withDeadline(node.rtm.subscribe(channel, { withMessage: true, withPresence: true }), DEADLINE_MS, `${bob} to subscribe`);

        context = await browser.createBrowserContext();
        page = await context.newPage();
        await page.setViewport({ width: 1000, height: 680 });
        page.on('console', (m) => pageLog.push(`console.${m.type()}: ${m.text()}`));
        page.on('pageerror', (e) => pageLog.push(`pageerror: ${e.message}`));
        page.on('requestfailed', (r) => pageLog.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
        // No hash= in the WebTransport run: the page fetches it from the WebSocket listener,
        // as it does when opened by hand.
        const query = new URLSearchParams({ server: `${wtUrl},${wsUrl}`, transport: run.transport, user: alice, channel, app: APP_ID });
        const url = `http://127.0.0.1:${pageServer.address().port}/examples/chat/?${query}`;
        await withDeadline(page.goto(url, { waitUntil: 'load' }), DEADLINE_MS, `the page ${url} to load`);
      });

      after(async () => {
        if (node) await withDeadline(node.rtm.logout(), 5000, `${bob} to log out`).catch(() => undefined);
        if (context) await withDeadline(context.close(), 10_000, 'the browser context to close').catch(() => undefined);
      });

      test(`the page logs in and subscribes over ${run.name}`, async () => {
        await pageWait('the SDK to load', () => window.chatState?.sdkLoaded === true);
        assert.equal(await page.$eval('#user', (el) => el.value), alice);
        await page.click('#login');
        await pageWait('the page to be logged in and subscribed', () => window.chatState.subscribed && window.chatState.linkState === 'CONNECTED');
        const st = await page.evaluate(() => window.chatState);
        assert.equal(st.transport, run.transport, `the page connected over ${st.transport}, not ${run.transport}${await explain()}`);
        assert.equal(await page.$eval('#transport', (el) => el.textContent), run.name);
        assert.equal(await page.$eval('#link-state', (el) => el.textContent), 'CONNECTED');
        assert.deepEqual(st.accessPoints, [run.transport === 'webtransport' ? wtUrl : wsUrl]);
        if (run.transport === 'webtransport') {
          assert.equal(st.certificateHash, hash, 'the page must use the server\'s certificate hash');
          assert.equal(st.hashSource, 'fetched');
        } else {
          assert.equal(st.certificateHash, null);
        }
      });

      test('the presence list shows the Node user, and the Node user sees the page arrive', async () => {
        await pageWait(`${bob} in the presence list`, (u) => !!document.querySelector(`#presence li[data-user="${u}"]`), bob);
        await pageWait('the page user in its own presence list', (u) => !!document.querySelector(`#presence li.me[data-user="${u}"]`), alice);
        await node.events.wait(`${bob} to see ${alice} join`, (e) => e.event === 'presence' && e.eventType === 'REMOTE_JOIN' && e.publisher === alice && e.channelName === channel);
        assert.equal(await page.$eval('#presence-count', (el) => el.textContent), '2');
      });

      test('a message from the Node client shows in the page', async () => {
        const text = `Hi ${alice}! This is ${bob}, from Node over WebSocket.`;
        await withDeadline(node.rtm.publish(channel, text), DEADLINE_MS, `${bob} to publish`);
        await pageWait(`${bob}'s message in the message list`, ([from, t]) => window.chatState.messages.some((m) => m.from === from && m.text === t), [bob, text]);
        const shown = await page.$$eval('#messages .message .text', (els) => els.map((el) => el.textContent));
        assert.ok(shown.includes(text), `the message list shows ${JSON.stringify(shown)}`);
      });

      test('a message typed in the page reaches the Node client, with typing state on the way', async () => {
        const text = `Hello ${bob}, ${alice} here, in Chromium over ${run.name}.`;
        await page.type('#text', text);
        // Typing sets the page user's presence state ...
        await node.events.wait(`${bob} to see ${alice} typing`, (e) => e.event === 'presence' && e.eventType === 'REMOTE_STATE_CHANGED' && e.publisher === alice && e.stateChanged.typing === 'true');
        const typedAt = node.events.items.length;
        await page.keyboard.press('Enter');
        const got = await node.events.wait(`${bob} to receive ${alice}'s message`, (e) => e.event === 'message' && e.publisher === alice && e.channelName === channel);
        assert.equal(got.message, text);
        assert.equal(got.messageType, 'STRING');
        // ... and sending clears it.
        await node.events.wait(`${alice}'s typing state to be cleared`, (e) => node.events.items.indexOf(e) >= typedAt && e.event === 'presence' && e.eventType === 'REMOTE_STATE_CHANGED' && e.publisher === alice && !('typing' in e.stateChanged));
        await pageWait('the page\'s own message in its list', (t) => window.chatState.messages.some((m) => m.mine && m.text === t), text);
        assert.equal(await page.$eval('#text', (el) => el.value), '');
      });

      test('the typing indicator shows while the Node user types', async () => {
        await withDeadline(node.rtm.presence.setState(channel, 'MESSAGE', { typing: 'true' }), DEADLINE_MS, `${bob} to set typing`);
        await pageWait(`"${bob} is typing…"`, (u) => document.querySelector('#typing').textContent === `${u} is typing…`, bob);
        assert.deepEqual(await page.evaluate(() => window.chatState.typing), [bob]);
        if (run.transport === 'webtransport' && process.env.RTM_SCREENSHOT === '1') {
          const more = "Nice! Who is typing comes from presence state: watch the line above the text box.";
          await withDeadline(node.rtm.publish(channel, more), DEADLINE_MS, `${bob} to publish`);
          await pageWait('the last message', (t) => window.chatState.messages.some((m) => m.text === t), more);
          await withDeadline(node.rtm.presence.setState(channel, 'MESSAGE', { typing: 'true', mood: 'happy' }), DEADLINE_MS, `${bob} to set typing`);
          await page.type('#text', 'Looks good from here');
          fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
          await page.screenshot({ path: SCREENSHOT, fullPage: true });
          console.log(`# screenshot: ${path.relative(REPO, SCREENSHOT)}`);
        }
        await withDeadline(node.rtm.presence.removeState(channel, 'MESSAGE', { states: ['typing'] }), DEADLINE_MS, `${bob} to clear typing`);
        await pageWait('the typing indicator to clear', () => document.querySelector('#typing').textContent === '');
      });

      const peerMissing = !fs.existsSync(JS_PEER_BIN) && `the Rust peer ${path.relative(REPO, JS_PEER_BIN)} is not built (cargo build -p rtm-testkit --example js_peer)`;
      // The Rust client over native QUIC beside a page on WebTransport, over WebSocket beside a
      // page on WebSocket.
      test('the page chats with the Rust client too', { skip: peerMissing }, async () => {
        const way = run.transport === 'websocket' ? ['--transport', 'websocket', '--ws-addr', `127.0.0.1:${ports.tcp}`] : ['--transport', 'quic'];
        const peer = new RustPeer([
          ...way,
          '--server', `127.0.0.1:${ports.udp}`, '--cert', path.join(dataDir, 'cert.pem'),
          '--app-id', APP_ID, '--user-id', carol,
        ]);
        try {
          await peer.events.wait('js_peer to be ready', (e) => 'ready' in e || e.exited || e.spawnError);
          const ready = peer.events.items.find((e) => 'ready' in e);
          assert.ok(ready?.ready, `js_peer did not start: ${JSON.stringify(peer.events.items)} ${peer.stderr}`);
          await peer.cmd('login');
          await peer.cmd('subscribe', { channel });
          await pageWait(`${carol} in the presence list`, (u) => !!document.querySelector(`#presence li[data-user="${u}"]`), carol);

          const fromRust = `Greetings from ${carol}, the Rust client.`;
          await peer.cmd('publish', { channel, message: fromRust });
          await pageWait(`${carol}'s message in the page`, ([from, t]) => window.chatState.messages.some((m) => m.from === from && m.text === t), [carol, fromRust]);

          const toRust = `Welcome ${carol}!`;
          await page.type('#text', toRust);
          await page.keyboard.press('Enter');
          const got = await peer.events.wait(`${carol} to receive the page's message`, (e) => e.event === 'message' && e.publisher === alice && e.message === toRust);
          assert.equal(got.channelName, channel);

          await peer.cmd('setState', { channel, states: { typing: 'true' } });
          await pageWait(`"${carol} is typing…"`, (u) => document.querySelector('#typing').textContent === `${u} is typing…`, carol);
          await peer.cmd('removeState', { channel, keys: ['typing'] });
          await pageWait('the typing indicator to clear', () => document.querySelector('#typing').textContent === '');
          await peer.cmd('unsubscribe', { channel });
          await pageWait(`${carol} to leave the presence list`, (u) => !document.querySelector(`#presence li[data-user="${u}"]`), carol);
        } finally {
          await peer.close();
        }
      });

      test('the Node user leaving takes it off the presence list', async () => {
        await withDeadline(node.rtm.logout(), DEADLINE_MS, `${bob} to log out`);
        node = null;
        await pageWait(`${bob} to leave the presence list`, (u) => !document.querySelector(`#presence li[data-user="${u}"]`), bob);
        assert.deepEqual(await page.evaluate(() => window.chatState.presence), [alice]);
        const st = await page.evaluate(() => window.chatState);
        assert.equal(st.transport, run.transport, 'still on the same transport');
        assert.equal(st.linkState, 'CONNECTED');
        const errors = pageLog.filter((l) => l.startsWith('pageerror') || l.startsWith('console.error'));
        assert.deepEqual(errors, [], 'the page logged errors');
      });
    });
  }
});
