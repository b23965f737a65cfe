// vspc-bridge web console: login, the live list of consoles, and a
// console in xterm.js over one WebSocket (protocol in web/doc.go).
//
// Everything that comes from the bridge (VM names, service URIs, user
// names, console output) is untrusted text: it is set with textContent or
// written to the terminal, never parsed as HTML. The terminal's window
// title is never set from guest output, and no clipboard addon is loaded
// (guest OSC 52 cannot write the clipboard); links the guest prints open
// only as http(s), after a confirmation, in a tab that cannot reach this one.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const encoder = new TextEncoder();
  const INPUT_CHUNK = 8192; // bytes per input frame (the bridge takes 64 KiB at most)

  // state is also what the browser tests read (window.vspc).
  const state = { session: null, view: '', es: null, list: [], listReady: false, con: null };
  window.vspc = state;

  // ---- API ------------------------------------------------------------
  async function api(path, opts) {
    const o = Object.assign({ credentials: 'same-origin', headers: {} }, opts || {});
    if (o.json !== undefined) {
      o.method = o.method || 'POST';
      o.headers['Content-Type'] = 'application/json';
      o.body = JSON.stringify(o.json);
      delete o.json;
    }
    const r = await fetch(path, o);
    let body = null;
    if ((r.headers.get('Content-Type') || '').startsWith('application/json')) {
      body = await r.json();
    }
    return { status: r.status, ok: r.ok, body: body };
  }

  // ---- views and routing -----------------------------------------------
  function show(view) {
    for (const v of ['login', 'list', 'console']) $('view-' + v).hidden = v !== view;
    state.view = view;
  }

  function route() {
    if (!state.session) {
      showLogin();
      return;
    }
    const h = location.hash.replace(/^#\/?/, '');
    const m = h.match(/^(console|watch)\/([0-9a-f]{8,64})(?:\?(.*))?$/);
    if (m) openConsole(m[1], m[2], new URLSearchParams(m[3] || ''));
    else showList();
  }

  function setSession(s) {
    state.session = s;
    $('whoami').textContent = s.user;
    $('whoami').hidden = false;
    $('logout').hidden = false;
  }

  async function checkSession() {
    try {
      const r = await api('api/session');
      if (r.status === 401) {
        sessionEnded();
        return false;
      }
      return r.ok;
    } catch (e) {
      return false;
    }
  }

  function sessionEnded() {
    showLogin('Your session ended. Log in again.');
  }

  // ---- login -------------------------------------------------------------
  function showLogin(msg) {
    closeConsole();
    stopList();
    state.session = null;
    $('whoami').hidden = true;
    $('logout').hidden = true;
    show('login');
    document.title = 'vspc-bridge consoles';
    const err = $('login-error');
    err.hidden = !msg;
    err.textContent = msg || '';
    $('login-user').focus();
  }

  $('login-form').addEventListener('submit', async function (ev) {
    ev.preventDefault();
    const btn = $('login-submit');
    btn.disabled = true;
    try {
      const r = await api('api/login', { json: { user: $('login-user').value, password: $('login-password').value } });
      if (r.ok) {
        $('login-password').value = '';
        $('login-error').hidden = true;
        setSession(r.body);
        route();
      } else {
        $('login-error').textContent = (r.body && r.body.error) || ('login failed (' + r.status + ')');
        $('login-error').hidden = false;
        $('login-password').select();
      }
    } catch (e) {
      $('login-error').textContent = 'cannot reach the bridge';
      $('login-error').hidden = false;
    } finally {
      btn.disabled = false;
    }
  });

  $('logout').addEventListener('click', async function () {
    try {
      await api('api/logout', { method: 'POST' });
    } catch (e) { /* logged out locally anyway */ }
    showLogin('Logged out.');
  });

  // ---- the list ----------------------------------------------------------
  function showList() {
    closeConsole();
    show('list');
    document.title = 'vspc-bridge consoles';
    startList();
    renderList();
  }

  function startList() {
    if (state.es) return;
    const es = new EventSource('api/events');
    state.es = es;
    es.addEventListener('consoles', function (ev) {
      state.list = JSON.parse(ev.data).consoles;
      state.listReady = true;
      $('list-live').className = 'badge ok';
      $('list-live').textContent = 'live';
      renderList();
    });
    es.addEventListener('logout', function () {
      stopList();
      sessionEnded();
    });
    es.onerror = function () {
      $('list-live').className = 'badge warn';
      $('list-live').textContent = 'reconnecting';
      if (es.readyState === EventSource.CLOSED) {
        stopList();
        checkSession().then(function (ok) {
          if (ok && state.view === 'list') setTimeout(startList, 2000);
        });
      }
    };
  }

  function stopList() {
    if (state.es) state.es.close();
    state.es = null;
  }

  const filter = $('filter');
  filter.value = sessionStorage.getItem('vspc-filter') || '';
  filter.addEventListener('input', function () {
    sessionStorage.setItem('vspc-filter', filter.value);
    renderList();
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === '/' && state.view === 'list' && document.activeElement !== filter) {
      ev.preventDefault();
      filter.focus();
    }
  });

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function stateClass(s) {
    return { attached: 'ok', up: 'ok', detached: 'warn', connecting: 'warn', down: 'bad', closed: 'bad', vmotion: 'info' }[s] || '';
  }

  function shortMode(m) {
    return { 'read-write': 'rw', 'read-only': 'ro', exclusive: 'x', 'exclusive-write': 'xw', watch: 'watch' }[m] || m;
  }

  function matches(c, words) {
    const hay = [c.vm, c.vc_uuid, c.service, c.device, c.listen, c.state, c.kind]
      .concat((c.users || []).map(function (u) { return u.user; })).join(' ').toLowerCase();
    return words.every(function (w) { return hay.includes(w); });
  }

  const modeTitles = { rw: 'read-write, shared', ro: 'read-only', x: 'exclusive: nobody else attached', xw: 'exclusive-write: the only writer' };

  function renderList() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = state.list.filter(function (c) { return matches(c, words); });
    const body = $('consoles-body');
    body.replaceChildren();
    for (const c of shown) {
      const tr = el('tr');
      tr.dataset.id = c.id;
      const vm = el('td', 'vm', c.vm || '(unnamed)');
      if (c.vc_uuid) vm.appendChild(el('small', '', c.vc_uuid));
      tr.appendChild(vm);
      tr.appendChild(el('td', 'service', c.service));
      const st = el('td', 'state');
      st.appendChild(el('span', 'badge ' + stateClass(c.state), c.state));
      if (c.paused) {
        const p = el('span', 'badge warn', 'paused');
        p.title = 'The console waits for a client that is slow to take its output; the VM is not read meanwhile';
        st.appendChild(document.createTextNode(' '));
        st.appendChild(p);
      }
      tr.appendChild(st);
      const dev = el('td', 'device');
      if (c.kind === 'link') {
        dev.appendChild(document.createTextNode(c.device + ' '));
        dev.appendChild(el('span', 'badge ' + stateClass(c.device_state), c.device_state));
      } else {
        dev.textContent = c.listen || '—';
      }
      tr.appendChild(dev);
      const users = el('td', 'users');
      for (const u of c.users || []) {
        const chip = el('span', 'chip', u.user + ' (' + shortMode(u.mode) + ', ' + u.via + ')');
        chip.title = u.mode + ' via ' + u.via + ' from ' + u.peer + ' since ' + new Date(u.since).toLocaleTimeString();
        users.appendChild(chip);
      }
      tr.appendChild(users);
      tr.appendChild(el('td', 'right', c.right));
      const act = el('td', 'actions');
      if (c.kind === 'console') {
        const open = el('a', 'open', 'Open');
        open.href = '#/console/' + c.id;
        open.title = c.right === 'rw' ? 'read-write' : 'read-only';
        act.appendChild(open);
        for (const m of c.modes) {
          if (m === 'rw' || c.modes.length === 1) continue;
          const a = el('a', 'mode', m);
          a.href = '#/console/' + c.id + '?mode=' + m;
          a.title = 'Open ' + modeTitles[m];
          act.appendChild(a);
        }
      } else if (c.modes.indexOf('watch') >= 0) {
        const w = el('a', 'open', 'Watch');
        w.href = '#/watch/' + c.id;
        w.title = 'Watch the traffic read-only';
        act.appendChild(w);
      }
      tr.appendChild(act);
      body.appendChild(tr);
    }
    $('list-empty').hidden = shown.length > 0 || !state.listReady;
    $('list-count').textContent = state.listReady ? (shown.length === state.list.length
      ? state.list.length + ' ports' : shown.length + ' of ' + state.list.length + ' ports') : 'loading…';
  }

  // ---- a console -----------------------------------------------------------
  function fontSize() {
    const n = parseInt(localStorage.getItem('vspc-font') || '14', 10);
    return n >= 8 && n <= 32 ? n : 14;
  }

  function openConsole(kind, id, params) {
    stopList();
    const key = kind + '/' + id + '?' + params.toString();
    if (state.con && state.con.key === key) {
      show('console');
      return;
    }
    closeConsole();
    show('console');
    const con = {
      key: key, kind: kind, id: id, mode: params.get('mode') || '', dir: params.get('dir') || '',
      term: null, ws: null, retry: 0, timer: null, countdown: null, closed: false,
      connected: false, replaying: true, replayDone: false, canWrite: false, modeName: '', hello: null, users: null,
      inputSent: 0,
    };
    state.con = con;
    $('con-title').textContent = '';
    $('con-service').textContent = '';
    $('con-state').textContent = '';
    $('con-mode').textContent = '';
    $('con-link').textContent = '';
    $('who-list').replaceChildren();
    $('who-count').textContent = '';
    hideBanner();
    const term = new Terminal({
      cursorBlink: true,
      scrollback: 10000,
      fontFamily: '"DejaVu Sans Mono", "Liberation Mono", Menlo, monospace',
      fontSize: fontSize(),
      theme: { background: '#101418' },
      rightClickSelectsWord: true,
      macOptionIsMeta: true,
      // Links the guest prints (OSC 8) are untrusted: http(s) only, after
      // a confirmation, in a new tab that cannot reach this page.
      linkHandler: { activate: openGuestLink, allowNonHttpProtocols: false },
    });
    const fit = new FitAddon.FitAddon();
    const search = new SearchAddon.SearchAddon();
    term.loadAddon(fit);
    term.loadAddon(search);
    term.open($('terminal'));
    con.term = term;
    con.fit = fit;
    con.search = search;
    refit(con);
    con.resize = new ResizeObserver(function () { refit(con); });
    con.resize.observe($('terminal'));
    term.onData(function (d) { sendInput(con, encoder.encode(d)); });
    term.onBinary(function (d) {
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
      sendInput(con, b);
    });
    term.attachCustomKeyEventHandler(function (ev) { return keyHandler(con, ev); });
    updateButtons(con);
    connect(con);
    term.focus();
  }

  function openGuestLink(ev, uri) {
    let u;
    try {
      u = new URL(uri);
    } catch (e) {
      return;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return;
    if (confirm('The console output links to\n\n' + u.href + '\n\nOpen it in a new tab?')) {
      window.open(u.href, '_blank', 'noopener,noreferrer');
    }
  }

  function refit(con) {
    try {
      con.fit.fit();
    } catch (e) { /* not laid out yet */ }
  }

  function closeConsole() {
    const con = state.con;
    if (!con) return;
    con.closed = true;
    clearTimeout(con.timer);
    clearInterval(con.countdown);
    if (con.ws) con.ws.close(1000, 'closed');
    if (con.resize) con.resize.disconnect();
    con.term.dispose();
    state.con = null;
    $('find-bar').hidden = true;
  }

  function wsURL(con) {
    const u = new URL((con.kind === 'watch' ? 'ws/watch/' : 'ws/console/') + con.id, location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.hash = '';
    if (con.kind === 'console' && con.mode) u.searchParams.set('mode', con.mode);
    if (con.kind === 'watch' && con.dir) u.searchParams.set('dir', con.dir);
    return u.href;
  }

  function connect(con) {
    clearTimeout(con.timer);
    clearInterval(con.countdown);
    con.timer = null;
    if (con.closed) return;
    setStatus(con.retry ? 'reconnecting…' : 'connecting…');
    const ws = new WebSocket(wsURL(con), ['vspc.console.v1']);
    ws.binaryType = 'arraybuffer';
    con.ws = ws;
    ws.onmessage = function (ev) { if (con.ws === ws) onMessage(con, ev); };
    ws.onclose = function (ev) { onClose(con, ws, ev); };
  }

  function onMessage(con, ev) {
    if (typeof ev.data !== 'string') {
      con.term.write(new Uint8Array(ev.data));
      return;
    }
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    switch (m.type) {
      case 'hello':
        con.hello = m;
        con.connected = true;
        con.replaying = true;
        con.replayDone = false;
        con.users = null;
        con.term.reset(); // the scrollback that follows redraws the screen
        $('con-title').textContent = m.vm || '(unnamed)';
        $('con-service').textContent = m.service;
        document.title = (m.vm || 'console') + ' — vspc-bridge';
        $('btn-log').hidden = !m.log;
        $('btn-log').href = 'api/consoles/' + m.id + '/log';
        setMode(con, m.mode, m.can_write);
        setState(m.state);
        setLink(m.kind === 'link' ? m.device : '', m.device_state);
        $('watch-dir').hidden = m.kind !== 'link';
        if (m.dir) $('watch-dir').value = m.dir;
        if (con.retry) toast('reconnected');
        con.retry = 0;
        hideBanner();
        if (m.note) toast(m.note);
        setStatus('connected as ' + m.user + (m.replay ? ' · replaying ' + m.replay + ' bytes of scrollback' : ''));
        break;
      case 'replay-end':
        con.term.write('', function () {
          con.replaying = false;
          con.replayDone = true;
          if (con.connected) setStatus('connected as ' + con.hello.user);
        });
        break;
      case 'users':
        renderWho(con, m.users);
        break;
      case 'state':
        setState(m.state, m.paused);
        if (con.kind === 'watch') setLink(con.hello.device, m.device_state);
        break;
      case 'mode':
        setMode(con, m.mode, m.can_write);
        if (m.note) toast(m.note);
        break;
      case 'notice':
        toast(m.text);
        break;
      case 'error':
        toast(m.text, true);
        break;
    }
  }

  function onClose(con, ws, ev) {
    if (con.ws !== ws || con.closed) return;
    con.ws = null;
    con.connected = false;
    updateButtons(con);
    const reason = ev.reason || '';
    switch (ev.code) {
      case 4401:
        sessionEnded();
        return;
      case 4403:
        setStatus('closed');
        banner(reason || 'You may not open this console.', {});
        return;
      case 4409:
      case 4429:
        setStatus('closed');
        banner(reason || 'The console is busy.', { retry: true, readonly: ev.code === 4409 && con.mode !== 'ro' && con.kind === 'console' });
        return;
      case 4404:
        banner((reason || 'No such console.') + ' Waiting for it to come back…', { retry: true, info: true });
        break;
      case 1013:
        toast('fell behind the console; catching up from the scrollback');
        con.retry = 0;
        con.timer = setTimeout(function () { connect(con); }, 300);
        setStatus('reconnecting…');
        return;
    }
    // Anything else (a network drop, the bridge restarting): reconnect
    // with backoff, 1 s doubling to 30 s, sooner when the browser is back
    // online or the tab is shown again.
    const delay = Math.min(30, Math.pow(2, con.retry)) * (0.8 + 0.4 * Math.random());
    con.retry++;
    let left = Math.ceil(delay);
    setStatus('disconnected' + (reason ? ' (' + reason + ')' : '') + ' — reconnecting in ' + left + ' s');
    con.countdown = setInterval(function () {
      left--;
      if (left > 0) setStatus('disconnected' + (reason ? ' (' + reason + ')' : '') + ' — reconnecting in ' + left + ' s');
    }, 1000);
    con.timer = setTimeout(function () { connect(con); }, delay * 1000);
  }

  function reconnectNow() {
    const con = state.con;
    if (con && !con.ws && con.timer) connect(con);
  }
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') reconnectNow();
  });

  function sendInput(con, bytes) {
    const ws = con.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !con.canWrite || con.replaying) {
      // Read-only, or the terminal answering something in the replayed
      // scrollback: nothing reaches the VM.
      return;
    }
    for (let i = 0; i < bytes.length; i += INPUT_CHUNK) {
      ws.send(bytes.subarray(i, i + INPUT_CHUNK));
    }
    con.inputSent += bytes.length;
  }

  function control(con, msg) {
    if (con.ws && con.ws.readyState === WebSocket.OPEN) con.ws.send(JSON.stringify(msg));
  }

  function setMode(con, mode, canWrite) {
    con.modeName = mode;
    con.canWrite = !!canWrite;
    const b = $('con-mode');
    b.textContent = mode;
    b.className = 'badge ' + (canWrite ? 'ok' : 'info');
    updateButtons(con);
  }

  function setState(s, paused) {
    const b = $('con-state');
    b.textContent = paused ? s + ', paused' : s;
    b.className = 'badge ' + (paused ? 'warn' : stateClass(s));
    b.title = paused ? 'The console waits for a client that is slow to take its output; the VM is not read meanwhile' : '';
  }

  function setLink(device, st) {
    const b = $('con-link');
    b.textContent = device ? device + ' · ' + st : '';
    b.className = 'badge ' + stateClass(st);
  }

  function updateButtons(con) {
    const isConsole = con.kind === 'console';
    const h = con.hello;
    const switchable = isConsole && con.connected && h && h.right === 'rw' && (con.modeName === 'read-write' || con.modeName === 'read-only');
    const mb = $('btn-mode');
    mb.hidden = !isConsole;
    mb.disabled = !switchable;
    mb.textContent = con.canWrite ? 'Read-only' : 'Read-write';
    mb.title = con.canWrite ? 'Stop typing into this console (watch only)' : 'Type into this console (within your rights and others\' locks)';
    $('btn-break').hidden = !isConsole;
    $('btn-break').disabled = !(con.connected && con.canWrite);
    $('btn-paste').hidden = !isConsole;
    $('btn-paste').disabled = !(con.connected && con.canWrite);
    $('keys').hidden = !isConsole;
    $('watch-dir').hidden = isConsole;
  }

  function renderWho(con, users) {
    const old = con.users;
    con.users = users;
    const list = $('who-list');
    list.replaceChildren();
    for (const u of users) {
      const li = el('li');
      if (state.session && u.user === state.session.user && u.via === 'web') li.className = 'me';
      li.appendChild(el('b', '', u.user));
      li.appendChild(el('small', '', shortMode(u.mode) + ' · ' + u.via + ' · ' + u.peer));
      li.appendChild(el('small', '', 'since ' + new Date(u.since).toLocaleTimeString()));
      list.appendChild(li);
    }
    $('who-count').textContent = '(' + users.length + ')';
    if (old) {
      const id = function (u) { return u.user + '/' + u.via + '/' + u.peer + '/' + u.since; };
      const before = new Set(old.map(id));
      const after = new Set(users.map(id));
      for (const u of users) if (!before.has(id(u))) toast(u.user + ' joined (' + u.mode + ', ' + u.via + ')');
      for (const u of old) if (!after.has(id(u))) toast(u.user + ' left');
    }
  }

  // ---- banner, status, toasts ------------------------------------------------
  function banner(text, opts) {
    $('con-banner').hidden = false;
    $('con-banner').className = 'banner' + (opts.info ? ' info' : '');
    $('con-banner-text').textContent = text;
    $('con-retry').hidden = !opts.retry;
    $('con-readonly').hidden = !opts.readonly;
  }

  function hideBanner() {
    $('con-banner').hidden = true;
  }

  function setStatus(text) {
    $('con-status').textContent = text;
  }

  let toastTimer = null;
  function toast(text, bad) {
    const t = $('con-toast');
    t.textContent = text;
    t.style.color = bad ? '#ff8182' : '';
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.textContent = ''; }, 6000);
  }

  $('con-retry').addEventListener('click', function () {
    const con = state.con;
    if (!con) return;
    hideBanner();
    con.retry = 0;
    connect(con);
  });
  $('con-readonly').addEventListener('click', function () {
    const con = state.con;
    if (con) location.hash = '#/console/' + con.id + '?mode=ro';
  });

  // ---- buttons and keys ------------------------------------------------------
  $('btn-mode').addEventListener('click', function () {
    const con = state.con;
    if (con) control(con, { type: 'mode', mode: con.canWrite ? 'ro' : 'rw' });
    if (con) con.term.focus();
  });
  $('btn-break').addEventListener('click', function () {
    const con = state.con;
    if (con) control(con, { type: 'break' });
    if (con) con.term.focus();
  });
  $('watch-dir').addEventListener('change', function () {
    const con = state.con;
    if (con && con.kind === 'watch') location.hash = '#/watch/' + con.id + '?dir=' + $('watch-dir').value;
  });
  // Buttons give the keyboard back to the terminal: typing goes on there.
  $('btn-copy').addEventListener('click', function () {
    if (!state.con) return;
    copySelection(state.con);
    state.con.term.focus();
  });
  $('btn-paste').addEventListener('click', function () { if (state.con) pasteClipboard(state.con); });
  $('btn-find').addEventListener('click', toggleFind);
  $('btn-who').addEventListener('click', function () {
    const w = $('who');
    w.hidden = !w.hidden;
    $('btn-who').setAttribute('aria-expanded', String(!w.hidden));
    if (state.con) {
      refit(state.con);
      state.con.term.focus();
    }
  });
  function bumpFont(d) {
    const n = Math.max(8, Math.min(32, fontSize() + d));
    localStorage.setItem('vspc-font', String(n));
    const con = state.con;
    if (con) {
      con.term.options.fontSize = n;
      refit(con);
      con.term.focus();
    }
  }
  $('btn-font-minus').addEventListener('click', function () { bumpFont(-1); });
  $('btn-font-plus').addEventListener('click', function () { bumpFont(1); });

  const keyBytes = { esc: '\x1b', tab: '\t', 'ctrl-c': '\x03', 'ctrl-d': '\x04', 'ctrl-z': '\x1a' };
  const arrows = { up: 'A', down: 'B', right: 'C', left: 'D' };
  $('keys').addEventListener('click', function (ev) {
    const k = ev.target.dataset && ev.target.dataset.key;
    const con = state.con;
    if (!k || !con) return;
    let s = keyBytes[k];
    if (arrows[k]) s = (con.term.modes.applicationCursorKeysMode ? '\x1bO' : '\x1b[') + arrows[k];
    sendInput(con, encoder.encode(s));
    con.term.focus();
  });

  function copySelection(con) {
    const text = con.term.getSelection();
    if (!text) {
      toast('nothing selected');
      return;
    }
    const done = function () { toast('copied ' + text.length + ' characters'); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { toast('the browser refused the clipboard', true); });
      return;
    }
    const ta = el('textarea');
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
    done();
  }

  function pasteClipboard(con) {
    if (!con.canWrite) {
      toast('read-only: nothing is pasted', true);
      return;
    }
    if (!navigator.clipboard || !navigator.clipboard.readText) {
      toast('use Ctrl+Shift+V or the browser menu to paste', true);
      return;
    }
    navigator.clipboard.readText().then(function (t) {
      con.term.paste(t);
      con.term.focus();
    }, function () { toast('the browser refused the clipboard; use Ctrl+Shift+V', true); });
  }

  // keyHandler runs before xterm.js handles a key: false leaves the key to
  // the browser (Ctrl+Shift+V then pastes through xterm's own paste
  // handling, bracketed paste included).
  function keyHandler(con, ev) {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
    switch (ev.key.toLowerCase()) {
      case 'c':
        copySelection(con);
        ev.preventDefault();
        return false;
      case 'v':
        return false;
      case 'f':
        ev.preventDefault();
        toggleFind();
        return false;
    }
    return true;
  }

  function toggleFind() {
    const bar = $('find-bar');
    bar.hidden = !bar.hidden;
    if (!bar.hidden) {
      $('find-text').focus();
      $('find-text').select();
    } else if (state.con) {
      state.con.search.clearDecorations();
      state.con.term.focus();
    }
    if (state.con) refit(state.con);
  }
  function find(prev) {
    const con = state.con;
    const q = $('find-text').value;
    if (!con || !q) return;
    const opts = { caseSensitive: false, decorations: { matchOverviewRuler: '#888', activeMatchColorOverviewRuler: '#ff0', matchBackground: '#5a4b00', activeMatchBackground: '#b58900' } };
    const found = prev ? con.search.findPrevious(q, opts) : con.search.findNext(q, opts);
    if (!found) toast('not found: ' + q);
  }
  $('find-text').addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      find(ev.shiftKey);
    } else if (ev.key === 'Escape') {
      toggleFind();
    }
  });
  $('find-next').addEventListener('click', function () { find(false); });
  $('find-prev').addEventListener('click', function () { find(true); });
  $('find-close').addEventListener('click', toggleFind);

  // screenText returns the terminal's whole buffer as text (for tests and
  // for people who want to read it from the console).
  state.screenText = function () {
    const con = state.con;
    if (!con) return '';
    const b = con.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join('\n');
  };

  window.addEventListener('hashchange', route);
  api('api/session').then(function (r) {
    if (r.ok) setSession(r.body);
    route();
  }, function () { showLogin('cannot reach the bridge'); });
})();
