// rtm browser smoke test: Hello + Login over WebTransport and over WebSocket, with the frames
// built by hand (docs/protocol.md §2 framing, §3 postcard encoding, §4 messages).
//
// Loaded by index.html in the browser, and imported by transports.test.mjs under Node to check
// the encoder against the golden bytes of docs/protocol.md §8. Nothing here touches the DOM
// unless it runs in a page.

export const PROTOCOL_VERSION = 1;
export const WS_SUBPROTOCOL = 'rtm.v1';

// Variant indexes (rtm-proto/src/message.rs; docs/protocol.md §4).
export const CLIENT_HELLO = 0;
export const CLIENT_REQUEST = 1;
export const REQUEST_LOGIN = 0;
export const SERVER_WELCOME = 0;
export const SERVER_RESPONSE = 1;
export const SERVER_EVENT = 2;
export const SERVER_ERROR = 3;
export const SERVER_LANE = 4;
export const RESPONSE_LOGIN = 0;
const SERVER_MSG_NAMES = ['Welcome', 'Response', 'Event', 'Error', 'Lane'];

const STEP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Encoding (postcard 1.x)

/** Appends postcard values to a byte list. */
export class Writer {
  constructor() {
    this.bytes = [];
  }
  /** Unsigned LEB128 varint (u16, u32, u64, enum tags, lengths). */
  varint(n) {
    let v = BigInt(n);
    if (v < 0n) throw new RangeError(`varint of a negative number ${n}`);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      this.bytes.push(byte);
    } while (v !== 0n);
    return this;
  }
  /** i32: zigzag, then varint. */
  i32(n) {
    return this.varint(((n << 1) ^ (n >> 31)) >>> 0);
  }
  bool(b) {
    this.bytes.push(b ? 1 : 0);
    return this;
  }
  u8(n) {
    this.bytes.push(n & 0xff);
    return this;
  }
  /** Varint byte length, then UTF-8. */
  string(s) {
    const utf8 = new TextEncoder().encode(s);
    this.varint(utf8.length);
    for (const b of utf8) this.bytes.push(b);
    return this;
  }
  /** Varint length, then the bytes. */
  byteString(bs) {
    this.varint(bs.length);
    for (const b of bs) this.bytes.push(b);
    return this;
  }
  finish() {
    return Uint8Array.from(this.bytes);
  }
}

/** `ClientMsg::Hello { version, agent }`, as a frame body. */
export function encodeHello(agent, version = PROTOCOL_VERSION) {
  return new Writer().varint(CLIENT_HELLO).varint(version).string(agent).finish();
}

/**
 * `ClientMsg::Request { id, request: Request::Login(LoginRequest { app_id, user_id, token,
 * use_string_user_id, heartbeat_interval, presence_timeout }) }`, as a frame body.
 */
export function encodeLogin(id, login) {
  return new Writer()
    .varint(CLIENT_REQUEST)
    .varint(id)
    .varint(REQUEST_LOGIN)
    .string(login.app_id)
    .string(login.user_id)
    .string(login.token ?? '')
    .bool(login.use_string_user_id ?? true)
    .varint(login.heartbeat_interval ?? 5)
    .varint(login.presence_timeout ?? 300)
    .finish();
}

/** Adds the 4-byte big-endian length prefix of §2.1 (QUIC and WebTransport streams). */
export function frame(body) {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding (only what the smoke test needs)

export class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }
  get remaining() {
    return this.bytes.length - this.pos;
  }
  byte() {
    if (this.pos >= this.bytes.length) throw new Error(`body ends early at byte ${this.pos}`);
    return this.bytes[this.pos++];
  }
  /** Unsigned varint as a BigInt. */
  varintBig() {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.byte();
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v;
    }
    throw new Error('varint too long');
  }
  /** Unsigned varint as a Number (exact below 2^53). */
  varint() {
    return Number(this.varintBig());
  }
  i32() {
    const v = Number(this.varintBig() & 0xffffffffn);
    return (v >>> 1) ^ -(v & 1);
  }
  bool() {
    const b = this.byte();
    if (b > 1) throw new Error(`bad bool byte ${b}`);
    return b === 1;
  }
  take(n) {
    if (this.remaining < n) throw new Error(`body ends early: wanted ${n} bytes at ${this.pos}`);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  string() {
    return new TextDecoder('utf-8', { fatal: true }).decode(this.take(this.varint()));
  }
}

function wireError(r) {
  return { code: r.i32(), reason: r.string() };
}

/**
 * Decodes the start of a `ServerMsg` body: the variant, and for Welcome, Response (Login or an
 * error) and Error their fields. Anything else is reported by its tag only.
 */
export function decodeServerMsg(body) {
  const r = new Reader(body instanceof Uint8Array ? body : new Uint8Array(body));
  const tag = r.varint();
  const msg = { tag, kind: SERVER_MSG_NAMES[tag] ?? `unknown(${tag})`, length: r.bytes.length };
  switch (tag) {
    case SERVER_WELCOME:
      msg.version = r.varint();
      msg.server = r.string();
      break;
    case SERVER_RESPONSE: {
      msg.id = r.varint();
      const result = r.varint();
      if (result === 0) {
        msg.ok = true;
        msg.responseTag = r.varint();
        if (msg.responseTag === RESPONSE_LOGIN) {
          // Login { timestamp: u64, limits: LoginLimits, ticket: SessionTicket }
          msg.timestamp = r.varint();
          msg.limits = {
            max_message_size: r.varint(),
            max_subscriptions: r.varint(),
            publish_rate: r.varint(),
            max_frame_len: r.varint(),
          };
          msg.sessionId = r.varintBig().toString();
          r.take(16); // the ticket's secret stays out of the report
        } else {
          return msg; // not decoded further
        }
      } else if (result === 1) {
        msg.ok = false;
        msg.error = wireError(r);
      } else {
        throw new Error(`bad Result tag ${result}`);
      }
      break;
    }
    case SERVER_ERROR:
      msg.error = wireError(r);
      break;
    default:
      return msg;
  }
  if (r.remaining !== 0) throw new Error(`${r.remaining} trailing bytes after ${msg.kind}`);
  return msg;
}

export function hexToBytes(hex) {
  if (!/^([0-9a-f]{2})+$/i.test(hex)) throw new Error(`not hex: ${JSON.stringify(hex)}`);
  return Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------------------------------------
// Helpers

function withDeadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function errorText(e) {
  if (e == null) return String(e);
  if (typeof e === 'string') return e;
  const parts = [e.name && e.name !== 'Error' ? `${e.name}: ${e.message}` : e.message || String(e)];
  // WebTransportError carries where it came from and the stream's error code.
  if (e.source) parts.push(`source=${e.source}`);
  if (e.streamErrorCode != null) parts.push(`streamErrorCode=${e.streamErrorCode}`);
  return parts.join(' ');
}

/** Runs one step, recording ok/failed, its details and its duration in `record[name]`. */
async function step(record, name, fn) {
  const t0 = performance.now();
  try {
    const detail = await fn();
    record[name] = { ok: true, ms: Math.round(performance.now() - t0), ...detail };
    return record[name];
  } catch (e) {
    record[name] = { ok: false, ms: Math.round(performance.now() - t0), error: errorText(e), ...(e.detail ?? {}) };
    record.ok = false;
    throw e;
  } finally {
    render();
  }
}

function fail(message, detail) {
  const e = new Error(message);
  e.detail = detail;
  return e;
}

function expectWelcome(msg) {
  if (msg.tag !== SERVER_WELCOME) {
    throw fail(`expected Welcome, got ${msg.kind}${msg.error ? ` ${msg.error.code} ${msg.error.reason}` : ''}`, { got: msg });
  }
  return { version: msg.version, server: msg.server };
}

function expectLogin(msg, id) {
  if (msg.tag !== SERVER_RESPONSE) {
    throw fail(`expected Response, got ${msg.kind}${msg.error ? ` ${msg.error.code} ${msg.error.reason}` : ''}`, { got: msg });
  }
  if (msg.id !== id) throw fail(`expected the response to request ${id}, got id ${msg.id}`, { got: msg });
  if (!msg.ok) {
    throw fail(`login refused: ${msg.error.code} ${msg.error.reason}`, { id: msg.id, code: msg.error.code, reason: msg.error.reason });
  }
  if (msg.responseTag !== RESPONSE_LOGIN) throw fail(`expected Response::Login, got response tag ${msg.responseTag}`, { got: msg });
  return {
    id: msg.id,
    timestamp: msg.timestamp,
    time: new Date(msg.timestamp).toISOString(),
    limits: msg.limits,
    sessionId: msg.sessionId,
  };
}

// ---------------------------------------------------------------------------------------------
// WebTransport

/** Reads length-prefixed frames (§2.1) from a ReadableStream reader. */
class FrameReader {
  constructor(reader) {
    this.reader = reader;
    this.buf = new Uint8Array(0);
  }
  async next() {
    for (;;) {
      if (this.buf.length >= 4) {
        const len = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0, false);
        if (this.buf.length >= 4 + len) {
          const body = this.buf.slice(4, 4 + len);
          this.buf = this.buf.slice(4 + len);
          return body;
        }
      }
      const { value, done } = await this.reader.read();
      if (done) throw new Error(`the server ended the control stream (${this.buf.length} bytes of a partial frame left)`);
      const joined = new Uint8Array(this.buf.length + value.length);
      joined.set(this.buf);
      joined.set(value, this.buf.length);
      this.buf = joined;
    }
  }
}

async function webTransportSmoke(cfg, record) {
  record.ok = true;
  let wt;
  let closeInfo;
  try {
    const hash = await step(record, 'certificate-hash', async () => {
      const res = await withDeadline(fetch(cfg.hashUrl, { cache: 'no-store' }), STEP_TIMEOUT_MS, `GET ${cfg.hashUrl}`);
      if (!res.ok) throw fail(`GET ${cfg.hashUrl}: HTTP ${res.status}`, { status: res.status });
      const json = await res.json();
      if (json.algorithm !== 'sha-256') throw new Error(`unexpected algorithm ${json.algorithm}`);
      const value = hexToBytes(json.value);
      if (value.length !== 32) throw new Error(`hash is ${value.length} bytes, not 32`);
      return { status: res.status, value: json.value, notAfter: json.not_after, detail: `sha-256 ${json.value.slice(0, 16)}…` };
    });

    await step(record, 'connect', async () => {
      wt = new WebTransport(cfg.wtUrl, {
        serverCertificateHashes: [{ algorithm: 'sha-256', value: hexToBytes(hash.value) }],
      });
      wt.closed.then(
        (info) => { closeInfo = { closeCode: info?.closeCode, reason: info?.reason }; },
        (e) => { closeInfo = { error: errorText(e) }; },
      );
      await withDeadline(wt.ready, STEP_TIMEOUT_MS, `the WebTransport session to ${cfg.wtUrl} to be ready`);
      return { detail: cfg.wtUrl };
    });

    let writer;
    let frames;
    await step(record, 'hello', async () => {
      // The control stream: the first and only bidirectional stream (§1.2).
      const stream = await withDeadline(wt.createBidirectionalStream(), STEP_TIMEOUT_MS, 'the control stream to open');
      writer = stream.writable.getWriter();
      frames = new FrameReader(stream.readable.getReader());
      await writer.write(frame(encodeHello(cfg.agent)));
      const msg = decodeServerMsg(await withDeadline(frames.next(), STEP_TIMEOUT_MS, 'Welcome over WebTransport'));
      const w = expectWelcome(msg);
      return { ...w, detail: `Welcome v${w.version} from "${w.server}"` };
    });

    await step(record, 'login', async () => {
      await writer.write(frame(encodeLogin(1, { ...cfg.login, user_id: cfg.login.user_id + '-wt' })));
      const msg = decodeServerMsg(await withDeadline(frames.next(), STEP_TIMEOUT_MS, 'the login Response over WebTransport'));
      const l = expectLogin(msg, 1);
      return { ...l, detail: `logged in at ${l.time}, max_frame_len ${l.limits.max_frame_len}` };
    });

    await step(record, 'close', async () => {
      await writer.close().catch(() => {});
      wt.close({ closeCode: 0, reason: 'smoke test done' });
      await withDeadline(wt.closed.catch(() => {}), STEP_TIMEOUT_MS, 'the WebTransport session to close');
      return { detail: 'closed by the client' };
    });
  } catch (e) {
    // Report how the session ended, if it did, to tell a server close from a client timeout.
    if (wt) {
      await withDeadline(wt.closed.catch(() => {}), 1000, 'close info').catch(() => {});
      try { wt.close({ closeCode: 0, reason: 'smoke test failed' }); } catch { /* already closed */ }
    }
  }
  if (closeInfo) record.closeInfo = closeInfo;
  render();
  return record;
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/** Wraps a WebSocket: each binary message is one frame body (no length prefix). */
function openWebSocket(url, protocols) {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = 'arraybuffer';
  const queue = [];
  const waiters = [];
  const state = { ws, opened: false, closed: null, errored: false };
  const settleWaiters = () => {
    while (waiters.length && (queue.length || state.closed)) {
      const w = waiters.shift();
      if (queue.length) w.resolve(queue.shift());
      else w.reject(new Error(`the WebSocket closed (code ${state.closed.code}${state.closed.reason ? `, reason "${state.closed.reason}"` : ''})`));
    }
  };
  state.open = new Promise((resolve, reject) => {
    ws.addEventListener('open', () => { state.opened = true; resolve(); });
    ws.addEventListener('close', (ev) => {
      state.closed = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
      reject(new Error(`the WebSocket closed before opening (code ${ev.code}${ev.reason ? `, reason "${ev.reason}"` : ''})`));
      settleWaiters();
    });
  });
  state.open.catch(() => {});
  state.closedPromise = new Promise((resolve) => ws.addEventListener('close', () => resolve(state.closed)));
  ws.addEventListener('error', () => { state.errored = true; });
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data === 'string') queue.push({ text: ev.data });
    else queue.push(new Uint8Array(ev.data));
    settleWaiters();
  });
  state.next = () => new Promise((resolve, reject) => { waiters.push({ resolve, reject }); settleWaiters(); }).then((m) => {
    if (m.text !== undefined) throw new Error(`got a text message, expected binary: ${m.text.slice(0, 80)}`);
    return m;
  });
  return state;
}

async function webSocketSmoke(cfg, record) {
  record.ok = true;
  let sock;
  try {
    await step(record, 'connect', async () => {
      sock = openWebSocket(cfg.wsUrl, [WS_SUBPROTOCOL]);
      await withDeadline(sock.open, STEP_TIMEOUT_MS, `the WebSocket to ${cfg.wsUrl} to open`);
      if (sock.ws.protocol !== WS_SUBPROTOCOL) throw new Error(`server chose subprotocol "${sock.ws.protocol}", expected ${WS_SUBPROTOCOL}`);
      return { protocol: sock.ws.protocol, detail: `${cfg.wsUrl} (${sock.ws.protocol})` };
    });

    await step(record, 'hello', async () => {
      sock.ws.send(encodeHello(cfg.agent));
      const msg = decodeServerMsg(await withDeadline(sock.next(), STEP_TIMEOUT_MS, 'Welcome over WebSocket'));
      const w = expectWelcome(msg);
      return { ...w, detail: `Welcome v${w.version} from "${w.server}"` };
    });

    await step(record, 'login', async () => {
      sock.ws.send(encodeLogin(1, { ...cfg.login, user_id: cfg.login.user_id + '-ws' }));
      const msg = decodeServerMsg(await withDeadline(sock.next(), STEP_TIMEOUT_MS, 'the login Response over WebSocket'));
      const l = expectLogin(msg, 1);
      return { ...l, detail: `logged in at ${l.time}, max_frame_len ${l.limits.max_frame_len}` };
    });

    await step(record, 'close', async () => {
      sock.ws.close(1000, 'smoke test done');
      const c = await withDeadline(sock.closedPromise, STEP_TIMEOUT_MS, 'the WebSocket to close');
      return { ...c, detail: `closed, code ${c.code}` };
    });
  } catch {
    if (sock) {
      await withDeadline(sock.closedPromise, 500, 'close').catch(() => {});
      try { sock.ws.close(); } catch { /* closed */ }
    }
  }
  if (sock?.closed) record.closeInfo = sock.closed;
  render();
  return record;
}

/** A WebSocket asking for a subprotocol the server does not speak must not open. */
async function webSocketWrongProtocol(cfg, record) {
  record.ok = true;
  try {
    await step(record, 'refused', async () => {
      const sock = openWebSocket(cfg.wsUrl, ['nope']);
      const outcome = await withDeadline(
        sock.open.then(() => 'opened', () => 'refused'),
        STEP_TIMEOUT_MS,
        'the WebSocket with subprotocol "nope" to open or fail',
      );
      if (outcome === 'opened') {
        const protocol = sock.ws.protocol;
        sock.ws.close();
        throw fail(`the WebSocket opened with subprotocol "${protocol}" although only "nope" was offered`, { opened: true, protocol });
      }
      return { opened: false, errorEvent: sock.errored, code: sock.closed.code, detail: `did not open (error event, close code ${sock.closed.code})` };
    });
  } catch { /* recorded */ }
  render();
  return record;
}

// ---------------------------------------------------------------------------------------------
// The page

let current = null;

function config(overrides = {}) {
  const q = typeof location !== 'undefined' ? new URLSearchParams(location.search) : new URLSearchParams();
  const g = (typeof window !== 'undefined' && window.RTM_SMOKE_CONFIG) || {};
  const pick = (key, param) => overrides[key] ?? g[key] ?? q.get(param);
  const cfg = {
    wsUrl: pick('wsUrl', 'ws'),
    wtUrl: pick('wtUrl', 'wt'),
    hashUrl: pick('hashUrl', 'hash'),
    agent: pick('agent', 'agent') ?? `rtm-browser-smoke/1 (${(typeof navigator !== 'undefined' && navigator.userAgent.match(/(HeadlessChrome|Chrome|Firefox|Version)\/[\d.]+/)?.[0]) || 'unknown browser'})`,
    login: {
      app_id: pick('appId', 'app') ?? 'browsersmoke',
      user_id: pick('userId', 'user') ?? 'browser',
      token: pick('token', 'token') ?? '',
      use_string_user_id: true,
      heartbeat_interval: 5,
      presence_timeout: 300,
    },
  };
  if (!cfg.wsUrl || !cfg.wtUrl || !cfg.hashUrl) {
    throw new Error('missing configuration: give ?ws=<ws url>&wt=<wt url>&hash=<certificate-hash url>');
  }
  return cfg;
}

/**
 * Runs the whole smoke test and returns a JSON-able result:
 * `{ ok, webtransport: {ok, 'certificate-hash', connect, hello, login, close, closeInfo?},
 *    websocket: {ok, connect, hello, login, close}, websocketWrongProtocol: {ok, refused} }`,
 * each step `{ ok, ms, detail?, error?, ... }`.
 */
export async function runSmoke(overrides) {
  const cfg = config(overrides);
  const started = performance.now();
  current = {
    ok: false,
    running: true,
    config: { wsUrl: cfg.wsUrl, wtUrl: cfg.wtUrl, hashUrl: cfg.hashUrl, appId: cfg.login.app_id },
    webtransport: {},
    websocket: {},
    websocketWrongProtocol: {},
  };
  render();
  if (typeof WebTransport === 'undefined') {
    current.webtransport = { ok: false, connect: { ok: false, error: 'this browser has no WebTransport (or the page is not a secure context)' } };
  } else {
    await webTransportSmoke(cfg, current.webtransport);
  }
  await webSocketSmoke(cfg, current.websocket);
  await webSocketWrongProtocol(cfg, current.websocketWrongProtocol);
  current.ms = Math.round(performance.now() - started);
  current.ok = current.webtransport.ok && current.websocket.ok && current.websocketWrongProtocol.ok;
  current.running = false;
  render();
  if (typeof document !== 'undefined') document.body.dataset.state = current.ok ? 'passed' : 'failed';
  return JSON.parse(JSON.stringify(current));
}

const TRANSPORTS = [
  ['webtransport', 'WebTransport'],
  ['websocket', 'WebSocket'],
  ['websocketWrongProtocol', 'WebSocket, subprotocol "nope"'],
];

function render() {
  if (typeof document === 'undefined' || !current) return;
  const tbody = document.getElementById('steps');
  if (!tbody) return;
  tbody.replaceChildren();
  for (const [key, label] of TRANSPORTS) {
    const rec = current[key] ?? {};
    for (const [name, s] of Object.entries(rec)) {
      if (typeof s !== 'object' || s === null || name === 'closeInfo') continue;
      const tr = document.createElement('tr');
      tr.className = s.ok ? 'ok' : 'failed';
      const cells = [label, name, s.ok ? 'ok' : 'failed', s.ok ? (s.detail ?? '') : s.error, s.ms != null ? `${s.ms} ms` : ''];
      for (const c of cells) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      tbody.append(tr);
    }
    if (rec.closeInfo && !rec.ok) {
      const tr = document.createElement('tr');
      tr.className = 'failed';
      for (const c of [label, 'session closed', '', JSON.stringify(rec.closeInfo), '']) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }
  const summary = document.getElementById('summary');
  if (summary) {
    summary.textContent = current.running ? 'running…' : current.ok ? `all passed in ${current.ms} ms` : `FAILED (${current.ms} ms)`;
    summary.className = current.running ? '' : current.ok ? 'ok' : 'failed';
  }
  const pre = document.getElementById('result');
  if (pre) pre.textContent = JSON.stringify(current, null, 2);
}

if (typeof window !== 'undefined') {
  window.runSmoke = runSmoke;
  const q = new URLSearchParams(location.search);
  const targets = document.getElementById('targets');
  if (targets) {
    targets.textContent = q.get('ws') ? `ws ${q.get('ws')} · wt ${q.get('wt')} · hash ${q.get('hash')}` : 'no ?ws=&wt=&hash= given';
  }
  const button = document.getElementById('run');
  if (button) button.addEventListener('click', () => runSmoke().catch((e) => alert(e.message)));
  if (q.get('autorun') === '1') runSmoke().catch((e) => console.error(e));
  document.body.dataset.state = 'ready';
}
