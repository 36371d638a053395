// The operators' status page (GET / on the internal listener) in a headless Chromium, against a
// running rtm-server with a subscriber (the rtm CLI), messages published through the admin API
// and a webhook whose receiver is down: the page shows the live numbers.
//
//   RTM_SERVER_BIN  the server binary (default <repo>/target/debug/rtm-server)
//   RTM_CLI_BIN     the rtm command (default <repo>/target/debug/rtm)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   RTM_SCREENSHOT=1  save the page to docs/images/status-page.png

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { waitFor } from './support.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const SERVER_BIN = process.env.RTM_SERVER_BIN || path.join(REPO, 'target', 'debug', 'rtm-server');
const CLI_BIN = process.env.RTM_CLI_BIN || path.join(REPO, 'target', 'debug', 'rtm');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO, 'docs', 'images', 'status-page.png');
const APP = 'statusdemo';
const KEY = 'admin-key-of-the-status-test';

/** A child process whose output is kept, stopped by its PID at the end. */
function start(bin, args, env = {}) {
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', RUST_BACKTRACE: '0', ...env },
  });
  const proc = { child, log: '', exit: null };
  const keep = (chunk) => { proc.log = (proc.log + chunk).slice(-20_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, signal) => { proc.exit = { code, signal }; });
  child.on('error', (e) => { proc.exit = { error: e.message }; });
  return proc;
}

async function stop(proc) {
  if (!proc || proc.exit || !proc.child.pid) return;
  const kill = (signal) => { try { process.kill(proc.child.pid, signal); } catch { /* gone */ } };
  kill('SIGTERM');
  if (!(await waitFor('a child to exit', () => proc.exit, { ms: 10_000 }).catch(() => false))) {
    kill('SIGKILL');
    await waitFor('a child to exit after SIGKILL', () => proc.exit, { ms: 5_000 }).catch(() => {});
  }
}

function adminPublish(port, channel, message) {
  const body = JSON.stringify({ app_id: APP, channel, message });
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/admin/v1/publish', method: 'POST', agent: false, timeout: 2000,
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`publish: HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('publish: no answer')));
    req.on('error', reject);
    req.end(body);
  });
}

let server;
let subscriber;
let browser;
let tmp;
let shown; // what the page showed

before(async () => {
  for (const [file, what] of [[CHROMIUM, 'Chromium (apt-get install chromium), or set CHROMIUM'], [SERVER_BIN, 'rtm-server (cargo build -p rtm-server), or set RTM_SERVER_BIN'], [CLI_BIN, 'rtm (cargo build -p rtm-cli), or set RTM_CLI_BIN']]) {
    if (!fs.existsSync(file)) throw new Error(`${file} not found: ${what}; scripts/test sets everything up`);
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rtm-status-'));
  const config = path.join(tmp, 'rtm.toml');
  // Port 9 (discard) takes no connection here: the webhook's POSTs fail at once.
  fs.writeFileSync(config, [
    'listen = "127.0.0.1:0"',
    `data_dir = "${path.join(tmp, 'data')}"`,
    '[http]',
    'listen = "127.0.0.1:0"',
    `admin_key = "${KEY}"`,
    '[[apps]]',
    `app_id = "${APP}"`,
    '[apps.webhook]',
    'url = "http://127.0.0.1:9/rtm-events"',
    'secret = "webhook-secret-of-the-test"',
    'max_attempts = 1',
    'timeout_ms = 1000',
  ].join('\n'));
  server = start(SERVER_BIN, ['--config', config], { RUST_LOG: `${process.env.RUST_LOG ?? 'info'},rtm_server=info` });
  const [quicPort, httpPort] = await waitFor('rtm-server to say where it listens', () => {
    if (server.exit) throw Object.assign(new Error(`rtm-server exited ${JSON.stringify(server.exit)}:\n${server.log}`), { fatal: true });
    const quic = /listening on 127\.0\.0\.1:(\d+)/.exec(server.log);
    const ops = /operators: http:\/\/127\.0\.0\.1:(\d+)\//.exec(server.log);
    return quic && ops && [Number(quic[1]), Number(ops[1])];
  });
  subscriber = start(CLI_BIN, [
    '--server', `127.0.0.1:${quicPort}`, '--cert', path.join(tmp, 'data', 'cert.pem'),
    '--app-id', APP, '--user-id', 'watcher', 'sub', 'lobby',
  ]);
  await waitFor('the subscriber to subscribe', () => {
    if (subscriber.exit) throw Object.assign(new Error(`rtm sub exited: ${subscriber.log}`), { fatal: true });
    return subscriber.log.includes('subscribed to lobby');
  });

  const { default: puppeteer } = await import('puppeteer-core');
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 60_000,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(tmp, 'chromium-profile')}`],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 860 });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(`http://127.0.0.1:${httpPort}/`, { waitUntil: 'load' });
  // Messages through the admin API while the page watches: rates above 0 in its chart.
  let sent = 0;
  shown = await waitFor('the page to show the live numbers', async () => {
    await adminPublish(httpPort, 'lobby', `message ${sent++}`);
    const s = await page.evaluate(() => ({
      connections: document.getElementById('connections').textContent,
      quic: document.getElementById('transport-quic')?.textContent,
      apps: document.querySelector('#apps tbody').textContent,
      busiest: document.querySelector('#busiest tbody').textContent,
      published: document.getElementById('published').textContent,
      rate: document.getElementById('rate-published').textContent,
      errors: document.getElementById('errors').textContent,
      chartPaths: document.querySelectorAll('#chart path').length,
      header: document.getElementById('server').textContent,
    }));
    if (problems.length) throw Object.assign(new Error(problems.join('\n')), { fatal: true });
    return Number(s.rate) > 0 && s.chartPaths === 2 && s.errors.includes('webhook') && s.busiest.includes('lobby') ? s : null;
  }, { every: 250 });
  shown.sent = sent;
  if (process.env.RTM_SCREENSHOT === '1') {
    // For the picture: a minute of traffic that rises and falls, then the page.
    const until = Date.now() + 60_000;
    for (let i = 0; Date.now() < until; i++) {
      const burst = 1 + Math.round(4 + 4 * Math.sin(i / 8));
      await Promise.all(Array.from({ length: burst }, () => adminPublish(httpPort, 'lobby', `message ${sent++}`)));
      await new Promise((r) => setTimeout(r, 250));
    }
    await new Promise((r) => setTimeout(r, 2500));
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }
});

after(async () => {
  if (browser) await browser.close().catch(() => browser.process()?.kill('SIGKILL'));
  await stop(subscriber);
  await stop(server);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the page shows the connection, the app, the channel, the rates and the problem', () => {
  assert.equal(shown.connections, '1', JSON.stringify(shown));
  assert.equal(shown.quic, '1');
  assert.match(shown.apps, new RegExp(`${APP}\\s*1\\s*1`), shown.apps);
  assert.match(shown.busiest, /lobby/);
  assert.ok(Number(shown.published.replace(/,/g, '')) >= 1, shown.published);
  assert.ok(Number(shown.published.replace(/,/g, '')) <= shown.sent, `${shown.published} of ${shown.sent}`);
  assert.match(shown.errors, /webhook of statusdemo/);
  assert.match(shown.header, /version \d+\.\d+\.\d+ · up .* · one node/);
});
