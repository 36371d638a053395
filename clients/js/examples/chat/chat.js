// rtm chat: a small chat page on the Signaling Web API (the rtm-sdk IIFE bundle, global
// `AgoraRTM`), against a self-hosted rtm server. Plain JavaScript, no build step.
//
// Query string (all optional):
//   server     access points, comma separated, tried in turn
//              (default https://127.0.0.1:4433,ws://127.0.0.1:4434/rtm: the server's defaults;
//              https://host:port is WebTransport, ws(s)://host:port/rtm is WebSocket)
//   transport  webtransport | websocket: use only the access points of that kind
//   hash       the SHA-256 (hex) of the server's WebTransport certificate; when absent it is
//              fetched from http(s)://<WebSocket host>/rtm/certificate-hash
//   user       the user name to log in with      channel  the channel (default "lobby")
//   app        the App ID (default "rtmdemo")     sdk      the bundle's path (same origin only;
//                                                           default ../../dist/rtm-sdk.iife.min.js)
//
// What the page does is mirrored in `window.chatState` (link state, transport, messages,
// presence, typing users), for tests and for poking at it from the console.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const DEFAULT_SERVERS = ['https://127.0.0.1:4433', 'ws://127.0.0.1:4434/rtm'];
  /** Typing is cleared after this long without a keystroke. */
  const TYPING_PAUSE_MS = 3000;
  const TRANSPORT_NAMES = { webtransport: 'WebTransport', websocket: 'WebSocket' };

  const config = {
    servers: (params.get('server') || DEFAULT_SERVERS.join(',')).split(',').map((s) => s.trim()).filter(Boolean),
    transport: (params.get('transport') || '').toLowerCase(),
    hash: (params.get('hash') || '').trim(),
    app: params.get('app') || 'rtmdemo',
    sdk: params.get('sdk') || '../../dist/rtm-sdk.iife.min.js',
  };

  /** What the page shows, for tests and the console. */
  const state = {
    sdkLoaded: false,
    userId: null,
    channel: null,
    linkState: 'IDLE',
    transport: null,
    subscribed: false,
    certificateHash: null,
    hashSource: null,
    accessPoints: [],
    messages: [],
    presence: [],
    typing: [],
    error: null,
  };
  window.chatState = state;

  const $ = (id) => document.getElementById(id);
  const ui = {
    loginForm: $('login-form'), user: $('user'), channel: $('channel'), login: $('login'), logout: $('logout'), error: $('error'),
    linkState: $('link-state'), transport: $('transport'), whoami: $('whoami'),
    messages: $('messages'), typing: $('typing'), composer: $('composer'), text: $('text'), send: $('send'),
    presence: $('presence'), presenceChannel: $('presence-channel'), presenceCount: $('presence-count'), servers: $('servers'),
  };
  ui.user.value = params.get('user') || '';
  ui.channel.value = params.get('channel') || 'lobby';

  let rtm = null;
  /** userId → presence state ({ typing: 'true', ... }) of the users in the channel. */
  const people = new Map();
  let typingSent = false;
  let typingTimer = null;

  // ---- configuration ----------------------------------------------------------------------

  function kindOf(url) {
    const scheme = url.slice(0, url.indexOf(':')).toLowerCase();
    if (scheme === 'https') return 'webtransport';
    if (scheme === 'ws' || scheme === 'wss') return 'websocket';
    return null;
  }

  /** The access points to try, in order, after `transport=` and what this browser can do. */
  function accessPoints() {
    if (config.transport && !TRANSPORT_NAMES[config.transport]) {
      throw new Error(`transport=${config.transport}: expected webtransport or websocket`);
    }
    const bad = config.servers.filter((u) => !kindOf(u));
    if (bad.length) throw new Error(`not an access point (https:// or ws(s):// expected): ${bad.join(', ')}`);
    let points = config.servers.filter((u) => !config.transport || kindOf(u) === config.transport);
    if (!points.length) throw new Error(`no ${TRANSPORT_NAMES[config.transport]} access point in server=${config.servers.join(',')}`);
    if (typeof WebTransport !== 'function') {
      points = points.filter((u) => kindOf(u) !== 'webtransport');
      if (!points.length) throw new Error('this browser has no WebTransport: use a WebSocket access point (transport=websocket)');
    }
    return points;
  }

  /** The certificate hash for WebTransport: from `hash=`, else from the server's WebSocket listener. */
  async function certificateHash(points) {
    if (!points.some((u) => kindOf(u) === 'webtransport')) return null;
    if (config.hash) return { value: config.hash, source: 'query' };
    const ws = config.servers.find((u) => kindOf(u) === 'websocket');
    if (!ws) throw new Error('no hash= given and no WebSocket access point to fetch it from');
    const url = new URL(ws);
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    url.pathname = '/rtm/certificate-hash';
    url.search = '';
    const res = await fetch(url, { signal: AbortSignal.timeout(5000), cache: 'no-store' });
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
    const body = await res.json();
    if (!/^[0-9a-f]{64}$/i.test(body.value || '')) throw new Error(`GET ${url}: no SHA-256 hash in the answer`);
    return { value: body.value, source: 'fetched' };
  }

  /** Loads the SDK bundle (same origin only: a link must not be able to run a foreign script here). */
  function loadSdk() {
    const src = new URL(config.sdk, location.href);
    if (src.origin !== location.origin) return Promise.reject(new Error(`sdk=${config.sdk}: only a path on this site is loaded`));
    return new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = src.href;
      script.onload = () => (window.AgoraRTM ? resolve() : reject(new Error(`${src.pathname} defines no AgoraRTM`)));
      script.onerror = () => reject(new Error(`could not load the SDK from ${src.pathname} (build it: cd clients/js && node scripts/build.mjs)`));
      document.head.append(script);
    });
  }

  // ---- rendering --------------------------------------------------------------------------

  function setError(text) {
    state.error = text || null;
    ui.error.textContent = text || '';
  }

  function renderLink() {
    ui.linkState.textContent = state.linkState;
    ui.linkState.className = `badge state-${state.linkState}`;
    ui.transport.textContent = state.transport ? TRANSPORT_NAMES[state.transport] || state.transport : 'no transport';
    ui.transport.classList.toggle('state-CONNECTED', Boolean(state.transport) && state.linkState === 'CONNECTED');
    ui.whoami.textContent = state.userId ? `${state.userId} in ${state.channel}` : '';
    const loggedIn = Boolean(rtm);
    ui.login.hidden = loggedIn;
    ui.logout.hidden = !loggedIn;
    ui.user.disabled = ui.channel.disabled = loggedIn;
    const canWrite = state.subscribed && state.linkState === 'CONNECTED';
    ui.text.disabled = ui.send.disabled = !canWrite;
    ui.text.placeholder = canWrite ? `Message ${state.channel}` : 'Log in and subscribe to write…';
  }

  function renderServers() {
    const parts = [`App ID ${config.app}`, `access points: ${(state.accessPoints.length ? state.accessPoints : config.servers).join(', ')}`];
    if (state.certificateHash) parts.push(`certificate ${state.certificateHash.slice(0, 16)}… (${state.hashSource})`);
    ui.servers.textContent = parts.join(' · ');
  }

  function scrollDown() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function addMessage(from, text, timestamp, direct) {
    const mine = from === state.userId;
    state.messages.push({ from, text, timestamp, mine, direct: Boolean(direct) });
    const li = document.createElement('li');
    li.className = mine ? 'message mine' : 'message';
    const meta = document.createElement('div');
    meta.className = 'meta';
    const who = document.createElement('span');
    who.className = 'from';
    who.textContent = direct ? `${from} → you` : from;
    const time = document.createElement('time');
    time.textContent = new Date(timestamp || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.append(who, time);
    const body = document.createElement('div');
    body.className = 'text';
    body.textContent = text;
    li.append(meta, body);
    ui.messages.append(li);
    scrollDown();
  }

  function addNotice(text) {
    const li = document.createElement('li');
    li.className = 'notice';
    li.textContent = text;
    ui.messages.append(li);
    scrollDown();
  }

  function renderPresence() {
    const users = [...people.keys()].sort();
    state.presence = users;
    state.typing = users.filter((u) => u !== state.userId && people.get(u).typing === 'true');
    ui.presence.replaceChildren(...users.map((u) => {
      const li = document.createElement('li');
      li.textContent = u;
      li.dataset.user = u;
      if (u === state.userId) li.classList.add('me');
      if (state.typing.includes(u)) li.classList.add('is-typing');
      return li;
    }));
    ui.presenceChannel.textContent = state.channel || 'the channel';
    ui.presenceCount.textContent = String(users.length);
    const t = state.typing;
    ui.typing.textContent = t.length === 0 ? ''
      : t.length === 1 ? `${t[0]} is typing…`
      : t.length === 2 ? `${t[0]} and ${t[1]} are typing…`
      : `${t.length} people are typing…`;
  }

  // ---- events -----------------------------------------------------------------------------

  /** Which transport the client's connection of the moment uses. */
  function currentTransport() {
    // The Signaling API has no call for it; rtm-sdk adds `rtm.transport`.
    const kind = rtm && rtm.transport;
    if (kind) return kind;
    const kinds = new Set(state.accessPoints.map(kindOf));
    return kinds.size === 1 ? [...kinds][0] : null;
  }

  function onLinkState(e) {
    state.linkState = e.currentState;
    if (e.currentState === 'CONNECTED') state.transport = currentTransport();
    else if (e.currentState !== 'CONNECTING') state.transport = null;
    if (e.currentState === 'FAILED') setError(`link failed: ${e.reasonCode} ${e.reason || ''}`.trim());
    if (e.operation === 'RECONNECTED') addNotice(`reconnected over ${TRANSPORT_NAMES[state.transport] || 'an unknown transport'}`);
    if (e.currentState === 'DISCONNECTED' && e.previousState === 'CONNECTED') addNotice(`connection lost (${e.reason}); reconnecting…`);
    renderLink();
  }

  function onMessage(e) {
    const text = e.messageType === 'STRING' ? e.message : `[${e.message.length} bytes]`;
    if (e.channelType === 'MESSAGE' && e.channelName === state.channel) addMessage(e.publisher, text, e.timestamp, false);
    else if (e.channelType === 'USER') addMessage(e.publisher, text, e.timestamp, true);
  }

  function onPresence(e) {
    if (e.channelType !== 'MESSAGE' || e.channelName !== state.channel) return;
    switch (e.eventType) {
      case 'SNAPSHOT':
        people.clear();
        for (const u of e.snapshot || []) people.set(u.userId, { ...u.states });
        break;
      case 'INTERVAL': {
        const iv = e.interval;
        if (!iv) break;
        for (const u of iv.join.users) if (!people.has(u)) people.set(u, {});
        for (const u of [...iv.leave.users, ...iv.timeout.users]) people.delete(u);
        for (const u of iv.userStateList) people.set(u.userId, { ...u.states });
        break;
      }
      case 'REMOTE_JOIN':
        if (!people.has(e.publisher)) people.set(e.publisher, {});
        addNotice(`${e.publisher} joined`);
        break;
      case 'REMOTE_LEAVE':
        people.delete(e.publisher);
        addNotice(`${e.publisher} left`);
        break;
      case 'REMOTE_TIMEOUT':
        people.delete(e.publisher);
        addNotice(`${e.publisher} timed out`);
        break;
      case 'REMOTE_STATE_CHANGED':
        people.set(e.publisher, { ...e.stateChanged });
        break;
      default:
        return;
    }
    renderPresence();
  }

  /** Who is in the channel now (whoNow, every page), replacing the list. */
  async function refreshPresence() {
    const all = new Map();
    let page = '';
    for (let i = 0; i < 20; i++) {
      const r = await rtm.presence.whoNow(state.channel, 'MESSAGE', { includedState: true, page });
      for (const o of r.occupants) all.set(o.userId, { ...o.states });
      page = r.nextPage;
      if (!page) break;
    }
    people.clear();
    for (const [u, s] of all) people.set(u, s);
    renderPresence();
  }

  // ---- typing -----------------------------------------------------------------------------

  function onInput() {
    if (!rtm || !state.subscribed) return;
    clearTimeout(typingTimer);
    if (!ui.text.value.trim()) return stopTyping();
    if (!typingSent) {
      typingSent = true;
      rtm.presence.setState(state.channel, 'MESSAGE', { typing: 'true' }).catch((e) => {
        typingSent = false;
        console.warn('chat: setState failed', e);
      });
    }
    typingTimer = setTimeout(stopTyping, TYPING_PAUSE_MS);
  }

  function stopTyping() {
    clearTimeout(typingTimer);
    typingTimer = null;
    if (!typingSent) return;
    typingSent = false;
    if (rtm && state.subscribed) {
      rtm.presence.removeState(state.channel, 'MESSAGE', { states: ['typing'] }).catch((e) => console.warn('chat: removeState failed', e));
    }
  }

  // ---- login, logout, send ----------------------------------------------------------------

  async function login(userId, channel) {
    setError('');
    ui.login.disabled = true;
    let client = null;
    try {
      if (!state.sdkLoaded) throw new Error('the SDK is not loaded');
      const points = accessPoints();
      let hash = null;
      let usable = points;
      try {
        hash = await certificateHash(points);
      } catch (e) {
        // Without the hash WebTransport cannot verify the server: carry on with WebSocket.
        usable = points.filter((u) => kindOf(u) !== 'webtransport');
        if (!usable.length) throw new Error(`no certificate hash for WebTransport: ${e.message}`);
        addNotice(`WebTransport skipped: no certificate hash (${e.message})`);
      }
      state.accessPoints = usable;
      state.certificateHash = hash ? hash.value : null;
      state.hashSource = hash ? hash.source : null;
      renderServers();

      client = new AgoraRTM.RTM(config.app, userId, {
        privateConfig: {
          serviceType: ['MESSAGE'],
          accessPointHosts: usable,
          serverCertificateHashes: hash ? [hash.value] : [],
        },
      });
      rtm = client;
      state.userId = userId;
      state.channel = channel;
      client.addEventListener('linkState', (e) => client === rtm && onLinkState(e));
      client.addEventListener('message', (e) => client === rtm && onMessage(e));
      client.addEventListener('presence', (e) => client === rtm && onPresence(e));
      await client.login();
      state.transport = currentTransport();
      renderLink();
      await client.subscribe(channel, { withMessage: true, withPresence: true });
      state.subscribed = true;
      addNotice(`you joined ${channel} over ${TRANSPORT_NAMES[state.transport] || 'an unknown transport'}`);
      renderLink();
      await refreshPresence();
      ui.text.focus();
    } catch (e) {
      setError(e.reason || e.message || String(e));
      if (client && rtm === client) {
        rtm = null;
        client.logout().catch(() => undefined);
        resetSession();
      }
    } finally {
      ui.login.disabled = false;
      renderLink();
    }
  }

  function resetSession() {
    state.userId = state.channel = state.transport = null;
    state.subscribed = false;
    state.linkState = 'IDLE';
    people.clear();
    renderPresence();
    renderLink();
  }

  async function logout() {
    const client = rtm;
    if (!client) return;
    stopTyping();
    rtm = null;
    addNotice(`you left ${state.channel}`);
    resetSession();
    try {
      await client.logout();
    } catch (e) {
      console.warn('chat: logout failed', e);
    }
  }

  async function send() {
    const text = ui.text.value.trim();
    if (!text || !rtm || !state.subscribed) return;
    ui.text.value = '';
    stopTyping();
    try {
      // The server hands the message back to every subscriber, this one included: it shows
      // up in the list from the message event.
      await rtm.publish(state.channel, text);
    } catch (e) {
      addNotice(`not sent: ${e.reason || e.message}`);
      if (!ui.text.value) ui.text.value = text;
    }
  }

  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const userId = ui.user.value.trim();
    const channel = ui.channel.value.trim();
    if (userId && channel && !rtm) void login(userId, channel);
  });
  ui.logout.addEventListener('click', () => void logout());
  ui.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void send();
  });
  ui.text.addEventListener('input', onInput);
  window.addEventListener('pagehide', () => {
    if (rtm) rtm.logout().catch(() => undefined);
  });

  renderLink();
  renderPresence();
  renderServers();
  ui.login.disabled = true;
  loadSdk().then(
    () => {
      state.sdkLoaded = true;
      ui.login.disabled = false;
    },
    (e) => setError(e.message),
  );
})();
