// Real-browser proof: a headless Chromium reaches rtm-server over WebTransport and over
// WebSocket (Hello → Welcome, Login → Ok), and a WebSocket with a wrong subprotocol is refused.
//
// Run with `scripts/test` (which installs Chromium and, with cargo test, builds the server), or
// `cd tests/browser && npm ci && node --test` with the server built.
//   RTM_SERVER_BIN  the server binary (default <repo>/target/debug/rtm-server)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   RTM_SCREENSHOT=1  save the page to docs/images/browser-transports.png

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { waitFor } from './support.mjs';

import * as rtm from './page/rtm-smoke.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const PAGE_DIR = path.join(HERE, 'page');
const SERVER_BIN = process.env.RTM_SERVER_BIN || path.join(REPO, 'target', 'debug', 'rtm-server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO, 'docs', 'images', 'browser-transports.png');
const DEADLINE_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// The frame encoder of the page, against docs/protocol.md §8 and the golden bytes of
// rtm-proto/src/message.rs (no server needed).

test('page encoder matches the golden bytes of docs/protocol.md §8', () => {
  const hex = (b) => rtm.toHex(b);
  // golden_bytes: Hello { version: 1, agent: "a" }
  assert.equal(hex(rtm.frame(rtm.encodeHello('a'))), '0000000400010161');
  // §8: Request { id: 300, Publish { MESSAGE, "ch", Binary([9]), "t" } }, from the primitives
  const publish = new rtm.Writer()
    .varint(rtm.CLIENT_REQUEST).varint(300).varint(4).u8(1).string('ch').varint(1).byteString([9]).string('t')
    .finish();
  assert.equal(hex(rtm.frame(publish)), '0000000d01ac0204010263680101090174');
  // §8: the answer Response { id: 2, Err(-11033, "") }
  assert.deepEqual(rtm.decodeServerMsg(rtm.hexToBytes('01020 1b1ac0100'.replace(/ /g, ''))), {
    tag: 1, kind: 'Response', length: 7, id: 2, ok: false, error: { code: -11033, reason: '' },
  });
  assert.equal(hex(new rtm.Writer().i32(-11033).finish()), 'b1ac01');
  // Login, field by field (LoginRequest in rtm-proto/src/message.rs):
  // Request=1, id=1, Login=0, app_id "a", user_id "u", token "", use_string_user_id true,
  // heartbeat_interval 5, presence_timeout 300
  assert.equal(hex(rtm.encodeLogin(1, { app_id: 'a', user_id: 'u', token: '', use_string_user_id: true, heartbeat_interval: 5, presence_timeout: 300 })),
    '01' + '01' + '00' + '0161' + '0175' + '00' + '01' + '05' + 'ac02');
  // Welcome { version: 1, server: "s" } and Response { id: 1, Ok(Login { timestamp, limits, ticket }) }
  assert.deepEqual(rtm.decodeServerMsg(Uint8Array.of(0, 1, 1, 0x73)), { tag: 0, kind: 'Welcome', length: 4, version: 1, server: 's' });
  const login = new rtm.Writer().varint(1).varint(1).varint(0).varint(0)
    .varint(1_700_000_000_123n).varint(32768).varint(50).varint(60).varint(36864).varint(7)
    .finish();
  const body = Uint8Array.from([...login, ...new Array(16).fill(7)]);
  const decoded = rtm.decodeServerMsg(body);
  assert.equal(decoded.ok, true);
  assert.equal(decoded.timestamp, 1_700_000_000_123);
  assert.equal(decoded.limits.max_frame_len, 36864);
  assert.equal(decoded.sessionId, '7');
  assert.throws(() => rtm.decodeServerMsg(Uint8Array.from([...body, 0])), /trailing/);
});

// ---------------------------------------------------------------------------------------------
// Helpers

function withDeadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** GET `url`: { status, headers, body }. */
function httpGet(url, ms = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: ms, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${ms} ms`)));
    req.on('error', reject);
  });
}

/**
 * A raw WebSocket upgrade request asking for `protocol`: the HTTP status the server answers
 * (101 when it accepts) and the subprotocol it picks.
 */
function rawUpgrade(host, port, protocol, ms = 5000) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host, port, path: '/rtm', timeout: ms, agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': Buffer.from('rtm-browser-test').toString('base64'),
        'Sec-WebSocket-Protocol': protocol,
        Origin: 'http://127.0.0.1',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to the upgrade within ${ms} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const MIME = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css' };

/** Serves page/ on 127.0.0.1 (a secure context, as WebTransport needs). */
function servePage() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    const file = path.join(PAGE_DIR, name);
    if (!file.startsWith(PAGE_DIR + path.sep) || !fs.existsSync(file)) {
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

// ---------------------------------------------------------------------------------------------
// The browser run

describe('a headless Chromium reaches rtm-server', () => {
  let server; // the rtm-server child process
  let serverLog = '';
  let serverExit = null;
  let pageServer;
  let browser;
  let tmp;
  let result; // what the page's runSmoke() returned
  let refusedUpgrade; // the raw upgrade with subprotocol "nope"
  const consoleLines = [];

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: run scripts/test, which installs it (apt-get install chromium), or set CHROMIUM to a Chromium binary`);
    }
    if (!fs.existsSync(SERVER_BIN)) {
      throw new Error(`rtm-server not found at ${SERVER_BIN}: run scripts/test, which builds it (cargo build -p rtm-server), or set RTM_SERVER_BIN`);
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rtm-browser-'));
    const dataDir = path.join(tmp, 'data');
    fs.mkdirSync(dataDir);
    const t0 = Date.now();
    // Port 0, read back from the log: a probed free port could be taken before the bind by a
    // test running beside this one.
    server = spawn(SERVER_BIN, [
      '--listen', '127.0.0.1:0',
      '--websocket-listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0',
      '--data-dir', dataDir,
    ], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', RUST_LOG: `${process.env.RUST_LOG ?? 'info'},rtm_server=info` },
    });
    const keep = (chunk) => { serverLog = (serverLog + chunk).slice(-20_000); };
    server.stdout.on('data', keep);
    server.stderr.on('data', keep);
    server.on('exit', (code, signal) => { serverExit = { code, signal }; });
    server.on('error', (e) => { serverExit = { error: e.message }; });
    const [udpPort, tcpPort] = await waitFor('rtm-server to say where it listens', () => {
      if (serverExit) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(serverExit)}:\n${serverLog}`), { fatal: true });
      const udp = /listening on 127\.0\.0\.1:(\d+)/.exec(serverLog);
      const tcp = /WebSocket wss?:\/\/127\.0\.0\.1:(\d+)/.exec(serverLog);
      return udp && tcp && [Number(udp[1]), Number(tcp[1])];
    });

    const hashUrl = `http://127.0.0.1:${tcpPort}/rtm/certificate-hash`;
    const hash = await waitFor(`rtm-server to answer GET ${hashUrl}`, async () => {
      if (serverExit) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(serverExit)}:\n${serverLog}`), { fatal: true });
      const res = await httpGet(hashUrl);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.body.slice(0, 200)}`);
      return { ...JSON.parse(res.body), cors: res.headers['access-control-allow-origin'] };
    }).catch((e) => {
      if (e.fatal) throw e;
      throw new Error(`${e.message}\n--- server log ---\n${serverLog}`);
    });
    const serverReadyMs = Date.now() - t0;
    assert.equal(hash.algorithm, 'sha-256');
    assert.match(hash.value, /^[0-9a-f]{64}$/);
    assert.equal(hash.cors, '*', 'the certificate-hash answer must carry Access-Control-Allow-Origin: *');

    // The refusal seen from outside the browser: a browser fails a WebSocket whose server picks
    // no subprotocol anyway, so check that the server really answers something other than 101.
    refusedUpgrade = await rawUpgrade('127.0.0.1', tcpPort, 'nope');

    pageServer = await servePage();
    const pagePort = pageServer.address().port;
    const query = new URLSearchParams({
      ws: `ws://127.0.0.1:${tcpPort}/rtm`,
      wt: `https://127.0.0.1:${udpPort}/rtm`,
      hash: hashUrl,
    });
    const pageUrl = `http://127.0.0.1:${pagePort}/index.html?${query}`;

    const { default: puppeteer } = await import('puppeteer-core');
    const t1 = Date.now();
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
    }), DEADLINE_MS, `Chromium (${CHROMIUM}) to start`);
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 640 });
    page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => consoleLines.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    await withDeadline(page.goto(pageUrl, { waitUntil: 'load' }), DEADLINE_MS, `the page ${pageUrl} to load`);
    await waitFor('the page script to load (window.runSmoke)', () => page.evaluate(() => typeof window.runSmoke === 'function'));
    const t2 = Date.now();
    result = await withDeadline(page.evaluate(() => window.runSmoke()), 60_000, 'the page\'s runSmoke() to finish');
    const smokeMs = Date.now() - t2;

    if (process.env.RTM_SCREENSHOT === '1') {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }
    const timings = `server ready ${serverReadyMs} ms, browser start ${t2 - t1} ms, smoke ${smokeMs} ms`;
    console.log(`# ${timings}`);
    console.log(`# ${summarize(result)}`);
    console.log(`# raw upgrade with subprotocol "nope": HTTP ${refusedUpgrade.status}`);
    if (!result.ok || consoleLines.length) {
      console.log(`# browser console:\n${consoleLines.map((l) => `#   ${l}`).join('\n') || '#   (nothing)'}`);
    }
  });

  after(async () => {
    // Always clean up, even after a failure: the browser, the page server, the rtm server (by PID).
    if (browser) await withDeadline(browser.close(), 10_000, 'Chromium to close').catch(() => browser.process()?.kill('SIGKILL'));
    if (pageServer) {
      pageServer.closeAllConnections?.();
      await new Promise((r) => pageServer.close(r));
    }
    if (server && !serverExit && server.pid) {
      const kill = (signal) => { try { process.kill(server.pid, signal); } catch { /* already gone */ } };
      kill('SIGTERM');
      const stopped = await waitFor('rtm-server to exit after SIGTERM', () => serverExit, { ms: 10_000 }).catch(() => false);
      if (!stopped) {
        kill('SIGKILL');
        await waitFor('rtm-server to exit after SIGKILL', () => serverExit, { ms: 5_000 }).catch(() => {});
      }
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** The failing step and the context needed to tell why. */
  function explain(rec) {
    return `${JSON.stringify(rec, null, 2)}\n--- browser console ---\n${consoleLines.join('\n')}\n--- server log (tail) ---\n${serverLog.slice(-4000)}`;
  }

  test('WebTransport: Hello → Welcome', () => {
    const wt = result.webtransport;
    assert.ok(wt['certificate-hash']?.ok, `certificate hash:\n${explain(wt)}`);
    assert.ok(wt.connect?.ok, `WebTransport session:\n${explain(wt)}`);
    assert.ok(wt.hello?.ok, `hello:\n${explain(wt)}`);
    assert.equal(wt.hello.version, rtm.PROTOCOL_VERSION);
  });

  test('WebTransport: Login → Ok', () => {
    const wt = result.webtransport;
    assert.ok(wt.login?.ok, `login:\n${explain(wt)}`);
    assert.equal(wt.login.id, 1);
    assert.ok(Math.abs(wt.login.timestamp - Date.now()) < 5 * 60_000, `login timestamp ${wt.login.timestamp} is not now`);
  });

  test('WebSocket: Hello → Welcome', () => {
    const ws = result.websocket;
    assert.ok(ws.connect?.ok, `WebSocket connect:\n${explain(ws)}`);
    assert.equal(ws.connect.protocol, rtm.WS_SUBPROTOCOL);
    assert.ok(ws.hello?.ok, `hello:\n${explain(ws)}`);
    assert.equal(ws.hello.version, rtm.PROTOCOL_VERSION);
  });

  test('WebSocket: Login → Ok', () => {
    const ws = result.websocket;
    assert.ok(ws.login?.ok, `login:\n${explain(ws)}`);
    assert.equal(ws.login.id, 1);
    assert.ok(Math.abs(ws.login.timestamp - Date.now()) < 5 * 60_000, `login timestamp ${ws.login.timestamp} is not now`);
  });

  test('WebSocket with subprotocol "nope" is refused', () => {
    const neg = result.websocketWrongProtocol;
    assert.ok(neg.refused?.ok, `the browser's WebSocket with subprotocol "nope":\n${explain(neg)}`);
    assert.equal(neg.refused.opened, false);
    assert.notEqual(refusedUpgrade.status, 101,
      `the server accepted an upgrade asking only for subprotocol "nope" (HTTP 101, subprotocol ${refusedUpgrade.protocol ?? 'none'})`);
  });
});

function summarize(r) {
  const line = (name, rec) => `${name}: ${Object.entries(rec)
    .filter(([, s]) => s && typeof s === 'object' && 'ok' in s)
    .map(([k, s]) => `${k} ${s.ok ? 'ok' : 'FAILED'} ${s.ms ?? '?'}ms`).join(', ')}`;
  return [line('WebTransport', r.webtransport), line('WebSocket', r.websocket), line('WebSocket "nope"', r.websocketWrongProtocol)].join(' | ');
}
