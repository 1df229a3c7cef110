/*
 * mailsink web UI: plain JavaScript, no build step, no external resources.
 *
 * API used (shared/mailpit-api.md; all paths on the page's own origin):
 *   GET    /api/v1/messages?start=&limit=       list, newest first
 *   GET    /api/v1/search?query=&start=&limit=  search, same shape
 *   GET    /api/v1/message/{ID}                 the message (marks it read)
 *   GET    /api/v1/message/{ID}/headers         {"Name": ["value", ...]}
 *   GET    /api/v1/message/{ID}/raw[?dl=1]      source (download with dl=1)
 *   GET    /api/v1/message/{ID}/part/{PartID}   one attachment
 *   PUT    /api/v1/messages                     {"IDs": [id], "Read": bool} or {"Read": true}
 *   DELETE /api/v1/messages                     {"IDs": [id]} or {} (all)
 *   GET    /api/v1/events                       Server-Sent Events, unnamed; data is
 *          {"Type": "new"|"update"|"delete"|"truncate"|"stats", "Data": ...}
 *   GET    /view/{ID}.html[?remote=1]           message HTML, only ever in the sandboxed iframe
 *   GET    /api/v1/webui                        {"MessageRelay": {"Enabled": bool, ...}, ...}
 *   POST   /api/v1/message/{ID}/release         {"To": ["addr", ...]}; 200, or 400 with a
 *                                               one-sentence text/plain reason
 *   POST   /api/v1/relay/test                   {}; answers {"status": "ok"|"error", "message"}
 * State-changing requests always send Content-Type: application/json with a JSON body.
 *
 * Stable hooks for end-to-end tests:
 *   #search                   search input; Enter (or #btn-search) runs it, #btn-search-clear clears
 *   #message-list             the list (role=listbox); rows .message-row[data-id="ID"]
 *                             (role=option), class "unread" when unread, class "selected" and
 *                             aria-selected="true" for the open message; #list-empty when empty
 *   #counts                   "123 messages, 4 unread" (search: "7 matches, 2 unread (of 123)")
 *   #pager, #btn-prev, #btn-next, #page-info   paging (hidden when one page holds everything)
 *   #message-view             the message pane; has the hidden attribute while none is open
 *   #message-subject          subject of the open message; #message-meta its header block (dl)
 *   [data-tab="html|text|headers|raw|attachments|transport"]  tabs (role=tab, aria-selected)
 *   #panel-html, #panel-text, #panel-headers, #panel-raw, #panel-attachments, #panel-transport
 *   #html-frame               <iframe sandbox="allow-popups allow-popups-to-escape-sandbox">
 *                             with src /view/{ID}.html; #btn-remote reloads it with ?remote=1
 *   #text-body, #headers-table, #raw-body, #raw-download, #attachment-list, #transport-list
 *   #btn-delete, #btn-delete-all (confirm() dialog first), #btn-mark-read, #btn-mark-unread,
 *   #btn-mark-all-read, #btn-back
 *   #live-indicator           text "live" (class "live") while the EventSource is open,
 *                             else "offline" (class "offline")
 *   #notice / #notice-text    errors, and the sign-in message after a 401; class "ok"
 *                             (green) for successes, else red
 * Relay (only shown when /api/v1/webui says MessageRelay.Enabled):
 *   #btn-relay-test           list toolbar; POSTs /api/v1/relay/test, shows its message
 *                             in #notice (class "ok" when status is "ok")
 *   #btn-release              message toolbar; opens #release-form (hidden until then) with
 *                             #release-to prefilled with the message's To addresses,
 *                             comma-separated; #btn-release-confirm (submit) releases,
 *                             #btn-release-cancel closes it. Success: "Released to a, b."
 *                             in #notice (class "ok"); a 400 shows the server's reason.
 * URL fragment: #search=QUERY&start=N&id=ID, so reload and back/forward restore the view.
 * Keyboard: j/k (or ↓/↑ in the list) next/previous, Enter opens, Delete deletes, / searches,
 * Esc closes the message.
 */
'use strict';

const LIMIT = 50;
const $ = (selector) => document.querySelector(selector);
const enc = encodeURIComponent;
const narrow = window.matchMedia('(max-width: 800px)');

const state = {
  listKey: null, search: '', start: 0, messages: [],
  total: 0, unread: 0, matches: 0, matchesUnread: 0,
  id: null, message: null, loadedTabs: new Set(), relay: false,
  listSeq: 0, openSeq: 0, fresh: new Set(), refreshTimer: null,
};

/* ---------- small helpers ---------- */

/** Build an element; strings among children become text nodes (never parsed as HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children);
  return node;
}

const shortAddr = (a) => (a ? a.Name || a.Address || '' : '');
const fullAddr = (a) => (!a ? '' : a.Name ? `${a.Name} <${a.Address}>` : a.Address || '');
const addrList = (list) => (list || []).map(fullAddr).filter(Boolean).join(', ');

function humanSize(bytes) {
  let n = Number(bytes) || 0;
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let i = -1;
  do { n /= 1000; i += 1; } while (n >= 999.5 && i < units.length - 1);
  return `${n < 9.95 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** Received time: relative today, else a short local date. */
function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    const secs = (now - d) / 1000;
    if (secs < 60) return 'just now';
    if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
    return `${Math.floor(secs / 3600)} h ago`;
  }
  const opts = d.getFullYear() === now.getFullYear()
    ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric' };
  return d.toLocaleString(undefined, opts);
}

function longDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso || '' : d.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'long' });
}

let noticeTimer = null;
function showNotice(text, sticky = false, ok = false) {
  $('#notice-text').textContent = text;
  $('#notice').classList.toggle('ok', ok);
  $('#notice').hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => { $('#notice').hidden = true; }, 10000);
}

function fail(err) {
  if (err && err.status === 401) return; // api() already said so
  showNotice(`Request failed: ${err && err.message ? err.message : err}`);
}

/* ---------- API ---------- */

class HttpError extends Error {
  constructor(status, text) { super(text || `HTTP ${status}`); this.status = status; }
}

async function api(method, path, body) {
  const init = { method, headers: {}, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showNotice('Sign-in needed: this server asks for a user name and password. Reload the page to sign in.', true);
    throw new HttpError(401, 'not signed in');
  }
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).trim().slice(0, 200);
    throw new HttpError(res.status, `${res.status} ${text || res.statusText}`);
  }
  return res;
}

const getJSON = async (path) => (await api('GET', path)).json();

/* ---------- relay ---------- */

async function loadWebUI() {
  let info;
  try {
    info = await getJSON('/api/v1/webui');
  } catch (err) { return; } // no relay buttons; a 401 already said so
  const enabled = Boolean(info && info.MessageRelay && info.MessageRelay.Enabled);
  state.relay = enabled;
  $('#btn-relay-test').hidden = !enabled;
  $('#btn-release').hidden = !enabled;
  if (!enabled) hideReleaseForm();
}

async function relayTest() {
  const button = $('#btn-relay-test');
  button.disabled = true;
  try {
    const answer = await (await api('POST', '/api/v1/relay/test', {})).json();
    const ok = answer && answer.status === 'ok';
    showNotice(String((answer && answer.message) || (ok ? 'SMTP connection successful' : 'relay test failed')), !ok, ok);
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

function hideReleaseForm() {
  $('#release-form').hidden = true;
  $('#release-status').textContent = '';
}

function showReleaseForm() {
  const m = state.message;
  if (!m || !state.relay) return;
  const to = (m.To || []).map((a) => (a && a.Address) || '').filter(Boolean).join(', ');
  $('#release-to').value = to;
  $('#release-status').textContent = '';
  $('#release-form').hidden = false;
  $('#release-to').focus();
}

async function releaseMessage(e) {
  e.preventDefault();
  const id = state.message && state.message.ID;
  if (!id) return;
  const to = $('#release-to').value.split(/[,;\s]+/).map((a) => a.trim()).filter(Boolean);
  if (!to.length) {
    $('#release-status').textContent = 'Enter at least one address.';
    return;
  }
  const submit = $('#btn-release-confirm');
  submit.disabled = true;
  $('#release-status').textContent = 'Releasing…';
  try {
    const res = await fetch(`/api/v1/message/${enc(id)}/release`, {
      method: 'POST', cache: 'no-store', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ To: to }),
    });
    if (res.status === 401) {
      showNotice('Sign-in needed: this server asks for a user name and password. Reload the page to sign in.', true);
      return;
    }
    if (!res.ok) {
      const text = (await res.text().catch(() => '')).trim().slice(0, 500);
      showNotice(text || `Release failed: HTTP ${res.status}`, true);
      return;
    }
    hideReleaseForm();
    showNotice(`Released to ${to.join(', ')}.`, false, true);
  } catch (err) {
    fail(err);
  } finally {
    submit.disabled = false;
    if (!$('#release-form').hidden) $('#release-status').textContent = '';
  }
}

/* ---------- URL fragment state ---------- */

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return {
    search: p.get('search') || '',
    start: Math.max(0, parseInt(p.get('start'), 10) || 0),
    id: p.get('id') || null,
  };
}

/** Change the fragment (push a history entry or replace the current one) and apply it. */
function navigate(changes, push = false) {
  const next = { ...readHash(), ...changes };
  const p = new URLSearchParams();
  if (next.search) p.set('search', next.search);
  if (next.start) p.set('start', String(next.start));
  if (next.id) p.set('id', next.id);
  const url = p.toString() ? `#${p}` : location.pathname + location.search;
  history[push ? 'pushState' : 'replaceState']({ pushed: push }, '', url);
  applyHash();
}

function applyHash() {
  const h = readHash();
  const key = `${h.search}\n${h.start}`;
  if (key !== state.listKey) {
    state.listKey = key;
    state.search = h.search;
    state.start = h.start;
    $('#search').value = h.search;
    loadList();
  }
  if (h.id !== state.id) {
    if (h.id) openMessage(h.id); else closeMessage();
  }
}

/* ---------- the list ---------- */

async function loadList() {
  const seq = ++state.listSeq;
  const page = `start=${state.start}&limit=${LIMIT}`;
  const path = state.search
    ? `/api/v1/search?query=${enc(state.search)}&${page}`
    : `/api/v1/messages?${page}`;
  let data;
  try {
    data = await getJSON(path);
  } catch (err) {
    if (seq === state.listSeq) fail(err);
    return;
  }
  if (seq !== state.listSeq) return;
  state.messages = data.messages || [];
  state.total = data.total ?? 0;
  state.unread = data.unread ?? 0;
  state.matches = data.messages_count ?? state.total;
  state.matchesUnread = data.messages_unread ?? state.unread;
  if (state.start > 0 && state.messages.length === 0 && state.matches > 0) {
    navigate({ start: Math.floor((state.matches - 1) / LIMIT) * LIMIT }); // page emptied: last page
    return;
  }
  renderList();
  renderCounts();
}

/** Reload the current page soon (at most once per burst of events or actions). */
function refreshSoon() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; loadList(); }, 700);
}

function rowFor(m) {
  const to = m.To || [];
  const toText = to.length ? shortAddr(to[0]) + (to.length > 1 ? ` +${to.length - 1}` : '') : '';
  const selected = m.ID === state.id;
  let cls = 'message-row';
  if (!m.Read) cls += ' unread';
  if (selected) cls += ' selected';
  if (state.fresh.has(m.ID)) cls += ' fresh';
  const created = new Date(m.Created);
  const row = el('li', { class: cls, role: 'option', tabindex: '-1', 'data-id': m.ID, 'aria-selected': String(selected) },
    el('span', { class: 'dot' }, m.Read ? '' : el('span', { class: 'sr-only', text: 'Unread: ' })),
    el('span', { class: 'from', text: shortAddr(m.From) || '(no sender)' }),
    el('time', { class: 'time', datetime: m.Created, title: Number.isNaN(created.getTime()) ? null : created.toLocaleString(), text: when(m.Created) }),
    el('span', { class: 'subject' + (m.Subject ? '' : ' muted'), text: m.Subject || '(no subject)' }),
    el('span', { class: 'meta' },
      m.Attachments > 0 ? el('span', { class: 'clip', title: `${m.Attachments} attachment(s)`, 'aria-label': 'has attachments', text: '📎' }) : '',
      el('span', { class: 'size', text: humanSize(m.Size) })),
    el('span', { class: 'line3' },
      el('span', { class: 'to', text: toText ? `To: ${toText}` : '' }),
      el('span', { class: 'snippet', text: m.Snippet ? ` — ${m.Snippet}` : '' })));
  row.sig = JSON.stringify(m); // renderList keeps rows whose summary is unchanged
  return row;
}

const rowById = (id) => [...document.querySelectorAll('#message-list .message-row')].find((r) => r.dataset.id === id);

/** Bring the list in line with state.messages, reusing unchanged rows (keeps focus and animations). */
function renderList() {
  const list = $('#message-list');
  const active = document.activeElement;
  const focusedId = active && list.contains(active) ? active.dataset.id : null;
  const old = new Map([...list.children].map((r) => [r.dataset.id, r]));
  const rows = state.messages.map((m) => {
    const row = old.get(m.ID);
    return row && row.sig === JSON.stringify(m) ? row : rowFor(m);
  });
  rows.forEach((row, i) => { if (list.children[i] !== row) list.insertBefore(row, list.children[i] || null); });
  while (list.children.length > rows.length) list.lastElementChild.remove();
  state.fresh.clear();
  markSelected(state.id);
  const empty = $('#list-empty');
  empty.hidden = state.messages.length > 0;
  empty.textContent = state.search ? 'No messages match this search.' : 'No messages yet. Send one to the SMTP port.';
  const current = (focusedId && rowById(focusedId)) || list.querySelector('.selected') || list.firstElementChild;
  for (const r of rows) r.tabIndex = r === current ? 0 : -1;
  if (focusedId && current && document.activeElement !== current) current.focus();
}

function renderCounts() {
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  $('#counts').textContent = state.search
    ? `${plural(state.matches, 'match', 'matches')}, ${state.matchesUnread} unread (of ${state.total})`
    : `${plural(state.total, 'message', 'messages')}, ${state.unread} unread`;
  const of = state.search ? state.matches : state.total;
  const last = state.start + state.messages.length;
  $('#pager').hidden = state.start === 0 && of <= LIMIT;
  $('#page-info').textContent = `${state.messages.length ? state.start + 1 : 0}–${last} of ${of}`;
  $('#btn-prev').disabled = state.start <= 0;
  $('#btn-next').disabled = last >= of;
  document.title = state.unread ? `(${state.unread}) mailsink` : 'mailsink';
}

function markSelected(id) {
  for (const row of document.querySelectorAll('#message-list .message-row')) {
    const on = row.dataset.id === id;
    row.classList.toggle('selected', on);
    row.setAttribute('aria-selected', String(on));
  }
}

function focusRow(row) {
  if (!row) return;
  for (const r of document.querySelectorAll('#message-list .message-row')) r.tabIndex = -1;
  row.tabIndex = 0;
  row.focus();
}

/** Record a read-state change locally (row, counts); idempotent. */
function setRead(id, read) {
  const m = state.messages.find((x) => x.ID === id);
  if (m && m.Read !== read) {
    m.Read = read;
    const delta = read ? -1 : 1;
    state.unread = Math.max(0, state.unread + delta);
    state.matchesUnread = Math.max(0, state.matchesUnread + delta);
    renderList();
    renderCounts();
  }
}

/** Drop rows locally (after our own delete or a "delete" event); idempotent. */
function removeRows(ids) {
  const gone = new Set(ids);
  const removed = state.messages.filter((m) => gone.has(m.ID));
  if (!removed.length) return;
  const unread = removed.filter((m) => !m.Read).length;
  state.messages = state.messages.filter((m) => !gone.has(m.ID));
  state.total = Math.max(0, state.total - removed.length);
  state.matches = Math.max(0, state.matches - removed.length);
  state.unread = Math.max(0, state.unread - unread);
  state.matchesUnread = Math.max(0, state.matchesUnread - unread);
  renderList();
  renderCounts();
}

/* ---------- the message view ---------- */

/**
 * Point the sandboxed iframe at a URL. A fresh element each time: changing the src of a loaded
 * iframe would add entries to the session history and break the back button.
 */
function setFrame(url, visible = true) {
  const old = $('#html-frame');
  const frame = old.cloneNode(false); // keeps id, sandbox, title, referrerpolicy
  frame.src = url;
  frame.hidden = !visible;
  old.replaceWith(frame);
}

function showView(on) {
  $('#message-view').hidden = !on;
  $('#no-message').hidden = on;
  document.body.classList.toggle('show-message', on);
}

async function openMessage(id) {
  state.id = id;
  state.message = null;
  hideReleaseForm();
  const seq = ++state.openSeq;
  markSelected(id);
  const summary = state.messages.find((m) => m.ID === id);
  $('#message-subject').textContent = summary ? summary.Subject || '(no subject)' : 'Loading…';
  showView(true);
  let m;
  try {
    m = await getJSON(`/api/v1/message/${enc(id)}`);
  } catch (err) {
    if (seq !== state.openSeq) return;
    if (err.status === 404) {
      showNotice('That message is no longer there.');
      navigate({ id: null });
    } else fail(err);
    return;
  }
  if (seq !== state.openSeq) return;
  state.message = m;
  setRead(id, true); // the GET marked it read
  renderMessage(m);
  if (narrow.matches) $('#message-subject').focus();
}

function closeMessage() {
  const previous = state.id;
  state.id = null;
  state.message = null;
  state.openSeq += 1;
  setFrame('about:blank', false);
  showView(false);
  markSelected(null);
  if (previous && narrow.matches) focusRow(rowById(previous));
}

function renderMessage(m) {
  $('#message-subject').textContent = m.Subject || '(no subject)';
  const meta = $('#message-meta');
  meta.replaceChildren();
  const field = (label, value) => { if (value) meta.append(el('dt', { text: label }), el('dd', { text: value })); };
  field('From', fullAddr(m.From) || '(no sender)');
  field('To', addrList(m.To) || '(none)');
  field('Cc', addrList(m.Cc));
  field('Bcc', addrList(m.Bcc));
  field('Reply-To', addrList(m.ReplyTo));
  field('Date', longDate(m.Date));
  field('Username', m.Username);

  const hasHTML = Boolean(m.HTML);
  $('#html-none').hidden = hasHTML;
  $('#btn-remote').hidden = !hasHTML;
  $('#remote-note').hidden = !hasHTML;
  $('#btn-remote').disabled = false;
  $('#btn-remote').textContent = 'Load remote content';
  setFrame(hasHTML ? `/view/${enc(m.ID)}.html` : 'about:blank', hasHTML);

  $('#text-body').textContent = m.Text || '(This message has no text part.)';
  $('#headers-table tbody').replaceChildren();
  $('#raw-body').textContent = '';
  $('#raw-download').href = `/api/v1/message/${enc(m.ID)}/raw?dl=1`;
  state.loadedTabs = new Set();

  const parts = [...(m.Attachments || []), ...(m.Inline || []).map((p) => ({ ...p, inline: true }))];
  $('#attachment-list').replaceChildren(...parts.map((p) => {
    const name = p.FileName || `part-${p.PartID}`;
    return el('li', { class: 'attachment' },
      el('a', { href: `/api/v1/message/${enc(m.ID)}/part/${enc(p.PartID)}`, download: name, text: name }),
      el('span', { class: 'muted', text: ` ${p.ContentType || 'application/octet-stream'} · ${humanSize(p.Size)}${p.inline ? ' · inline' : ''}` }));
  }));
  $('#attachments-none').hidden = parts.length > 0;
  $('#tab-attachments').textContent = parts.length ? `Attachments (${parts.length})` : 'Attachments';

  renderTransport(m.Transport);
  selectTab(hasHTML ? 'html' : 'text');
}

function renderTransport(t) {
  const dl = $('#transport-list');
  dl.replaceChildren();
  const rows = !t ? [['Transport', 'not recorded']] : [
    ['Client address', t.RemoteAddress],
    ['HELO/EHLO name', t.Helo],
    ['TLS', t.TLS ? [t.TLS.Version, t.TLS.Cipher].filter(Boolean).join(', ') || 'yes' : 'none (plaintext)'],
    ['Authenticated user', t.Username || '(none)'],
    ['Envelope from (MAIL FROM)', t.MailFrom || '<>'],
    ['Envelope recipients (RCPT TO)', (t.RcptTo || []).join(', ')],
    ['Listener', t.Listener],
    ['Protocol', t.Protocol],
  ];
  for (const [label, value] of rows) dl.append(el('dt', { text: label }), el('dd', { text: value || '—' }));
}

function selectTab(name, focus = false) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.tab === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(tab.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) tab.focus();
  }
  loadTab(name);
}

/** Headers and raw source are fetched when their tab is first shown. */
async function loadTab(name) {
  const m = state.message;
  if (!m || state.loadedTabs.has(name) || (name !== 'headers' && name !== 'raw')) return;
  state.loadedTabs.add(name);
  try {
    if (name === 'headers') {
      const headers = await getJSON(`/api/v1/message/${enc(m.ID)}/headers`);
      if (state.message !== m) return;
      $('#headers-table tbody').replaceChildren(...Object.entries(headers).flatMap(([key, values]) =>
        [].concat(values).map((v) => el('tr', {}, el('th', { scope: 'row', text: key }), el('td', { text: v })))));
    } else {
      const text = await (await api('GET', `/api/v1/message/${enc(m.ID)}/raw`)).text();
      if (state.message !== m) return;
      $('#raw-body').textContent = text;
    }
  } catch (err) {
    state.loadedTabs.delete(name);
    fail(err);
  }
}

/* ---------- actions ---------- */

/** The message an action applies to: the open one, else the focused row. */
function currentId() {
  if (state.id) return state.id;
  const row = document.activeElement?.closest?.('.message-row');
  return row ? row.dataset.id : null;
}

function neighbourId(id, delta) {
  const i = state.messages.findIndex((m) => m.ID === id);
  const m = i < 0 ? null : state.messages[i + delta];
  return m ? m.ID : null;
}

async function deleteMessage() {
  const id = currentId();
  if (!id) return;
  const next = neighbourId(id, 1) || neighbourId(id, -1);
  try {
    await api('DELETE', '/api/v1/messages', { IDs: [id] });
  } catch (err) { fail(err); return; }
  removeRows([id]);
  if (state.id === id) navigate({ id: null });
  focusRow(next && rowById(next));
  refreshSoon();
}

async function deleteAll() {
  const what = state.total === 1 ? 'the one message' : `all ${state.total} messages`;
  if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
  try {
    await api('DELETE', '/api/v1/messages', {});
  } catch (err) { fail(err); return; }
  clearAll();
  navigate({ id: null, start: 0 });
  refreshSoon();
}

function clearAll() {
  state.messages = [];
  state.total = state.unread = state.matches = state.matchesUnread = 0;
  renderList();
  renderCounts();
}

async function markRead(read) {
  const id = currentId();
  if (!id) return;
  try {
    await api('PUT', '/api/v1/messages', { IDs: [id], Read: read });
  } catch (err) { fail(err); return; }
  setRead(id, read);
  refreshSoon();
}

async function markAllRead() {
  try {
    await api('PUT', '/api/v1/messages', { Read: true });
  } catch (err) { fail(err); return; }
  for (const m of state.messages) setRead(m.ID, true);
  refreshSoon();
}

function move(delta) {
  const from = currentId() || (document.querySelector('#message-list [tabindex="0"]') || {}).dataset?.id;
  const target = from ? neighbourId(from, delta) : state.messages[0]?.ID;
  if (!target) return;
  if (state.id) navigate({ id: target }); // reading: open the next one
  focusRow(rowById(target));
}

function back() {
  if (history.state && history.state.pushed) history.back();
  else navigate({ id: null });
}

/* ---------- live updates ---------- */

function setLive(on) {
  const ind = $('#live-indicator');
  ind.textContent = on ? 'live' : 'offline';
  ind.className = on ? 'live' : 'offline';
  ind.title = on ? 'Live updates: connected' : 'Live updates: disconnected, retrying';
}

function handleEvent(event) {
  const data = event.Data;
  switch (event.Type) {
    case 'new':
      if (data && data.ID && !state.search && state.start === 0 && !state.messages.some((m) => m.ID === data.ID)) {
        state.messages.unshift(data);
        if (state.messages.length > LIMIT) state.messages.pop();
        state.total += 1;
        state.matches += 1;
        if (!data.Read) { state.unread += 1; state.matchesUnread += 1; }
        state.fresh.add(data.ID);
        renderList();
        renderCounts();
      }
      refreshSoon(); // re-runs an active search, fixes paging and counts
      break;
    case 'update': {
      const m = data && state.messages.find((x) => x.ID === data.ID);
      if (m) {
        setRead(m.ID, Boolean(data.Read)); // adjusts the unread counts
        Object.assign(m, data);
        renderList();
      }
      break;
    }
    case 'delete':
      removeRows((data && data.IDs) || []);
      if (data && (data.IDs || []).includes(state.id)) navigate({ id: null });
      refreshSoon();
      break;
    case 'truncate':
      clearAll();
      if (state.id) navigate({ id: null });
      break;
    case 'stats':
      if (data) {
        state.total = data.Total ?? state.total;
        state.unread = data.Unread ?? state.unread;
        if (!state.search) { state.matches = state.total; state.matchesUnread = state.unread; }
        renderCounts();
      }
      break;
    default:
      break;
  }
}

let retryDelay = 2000;
function connectEvents() {
  if (!window.EventSource) return;
  const source = new EventSource('/api/v1/events');
  source.onopen = () => { setLive(true); retryDelay = 2000; refreshSoon(); }; // catch up on missed events
  source.onerror = () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED) { // refused (e.g. 401/404): retry ourselves
      setTimeout(connectEvents, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 60000);
    }
  };
  source.onmessage = (e) => {
    let event;
    try { event = JSON.parse(e.data); } catch { return; }
    if (event && typeof event === 'object') handleEvent(event);
  };
}

/* ---------- wiring ---------- */

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t.matches('input, textarea, select, [contenteditable]')) {
    if (e.key === 'Escape' && t.id === 'search') t.blur();
    return;
  }
  const inList = Boolean(t.closest('#message-list'));
  switch (e.key) {
    case 'j': move(1); break;
    case 'k': move(-1); break;
    case 'ArrowDown': if (!inList) return; move(1); break;
    case 'ArrowUp': if (!inList) return; move(-1); break;
    case 'Enter': case ' ':
      if (!t.classList.contains('message-row')) return;
      navigate({ id: t.dataset.id }, !state.id);
      break;
    case 'Delete': deleteMessage(); break;
    case '/': $('#search').focus(); break;
    case 'Escape': if (!state.id) return; back(); break;
    default: return;
  }
  e.preventDefault();
}

function onTabKey(e) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const i = tabs.indexOf(e.target);
  const target = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
  if (i < 0 || target === undefined) return;
  e.preventDefault();
  e.stopPropagation();
  selectTab(tabs[(target + tabs.length) % tabs.length].dataset.tab, true);
}

function init() {
  $('#search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const query = $('#search').value.trim();
    if (query === state.search && state.start === 0) loadList();
    else navigate({ search: query, start: 0, id: null }, true);
  });
  $('#btn-search-clear').addEventListener('click', () => {
    $('#search').value = '';
    if (state.search) navigate({ search: '', start: 0 }, true);
    $('#search').focus();
  });
  $('#message-list').addEventListener('click', (e) => {
    const row = e.target.closest('.message-row');
    if (row) navigate({ id: row.dataset.id }, !state.id);
  });
  $('#btn-prev').addEventListener('click', () => navigate({ start: Math.max(0, state.start - LIMIT), id: null }, true));
  $('#btn-next').addEventListener('click', () => navigate({ start: state.start + LIMIT, id: null }, true));
  $('#btn-back').addEventListener('click', back);
  $('#btn-delete').addEventListener('click', deleteMessage);
  $('#btn-delete-all').addEventListener('click', deleteAll);
  $('#btn-mark-read').addEventListener('click', () => markRead(true));
  $('#btn-mark-unread').addEventListener('click', () => markRead(false));
  $('#btn-mark-all-read').addEventListener('click', markAllRead);
  $('#btn-relay-test').addEventListener('click', relayTest);
  $('#btn-release').addEventListener('click', showReleaseForm);
  $('#release-form').addEventListener('submit', releaseMessage);
  $('#btn-release-cancel').addEventListener('click', hideReleaseForm);
  $('#btn-notice-close').addEventListener('click', () => { $('#notice').hidden = true; });
  $('#btn-remote').addEventListener('click', () => {
    if (!state.message) return;
    setFrame(`/view/${enc(state.message.ID)}.html?remote=1`);
    $('#btn-remote').disabled = true;
    $('#btn-remote').textContent = 'Remote content allowed';
  });
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener('click', () => selectTab(tab.dataset.tab));
    tab.addEventListener('keydown', onTabKey);
  }
  document.addEventListener('keydown', onKey);
  window.addEventListener('popstate', applyHash);
  window.addEventListener('hashchange', applyHash);
  setInterval(() => { // keep "5 min ago" current
    for (const t of document.querySelectorAll('#message-list time')) t.textContent = when(t.getAttribute('datetime'));
  }, 60000);
  setLive(false);
  applyHash();
  connectEvents();
  loadWebUI();
}

init();
