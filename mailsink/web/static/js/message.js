/*
 * The message page: header block, the sandboxed HTML, and the tabs (text, headers, raw,
 * attachments, transport, checks).
 *
 * Hooks for end-to-end tests:
 *   #message-view             the message pane; has the hidden attribute while none is open
 *   #message-subject          subject of the open message; #message-meta its header block (dl);
 *                             #message-tags its tags (see tags.js)
 *   [data-tab="html|text|headers|raw|attachments|transport|checks"]  tabs (role=tab, aria-selected)
 *   #panel-html, #panel-text, #panel-headers, #panel-raw, #panel-attachments, #panel-transport,
 *   #panel-checks (its hooks are listed in checks.js)
 *   #html-frame               <iframe sandbox="allow-popups allow-popups-to-escape-sandbox">
 *                             with src /view/{ID}.html; #btn-remote reloads it with ?remote=1
 *   #text-body, #headers-table, #raw-body, #raw-download, #attachment-list, #transport-list
 *   #transport-session        in the Transport tab: link to the SMTP session that brought it
 *   #btn-back
 */
import { $, el, enc } from './dom.js';
import { addrList, fullAddr, humanSize, longDate } from './format.js';
import { api, appURL, getJSON } from './api.js';
import { fail, showNotice } from './notice.js';
import { back, hashFor, navigate } from './router.js';
import { focusRow, markSelected, rowById, setRead, summaryById } from './list.js';
import { hideReleaseForm } from './relay.js';
import { initChecks, loadChecks } from './checks.js';
import { renderMessageTags } from './tags.js';

const narrow = window.matchMedia('(max-width: 800px)');
const TABS = '#message-view [role="tab"]';

/** The message on show: its ID at once, the message when it has loaded (else null). */
export const shown = { id: null, message: null };

/** The loaded message on show, or null. */
export const shownMessage = () => shown.message;

let openSeq = 0; // answers for a message no longer open are dropped
let loadedTabs = new Set();

/** Tabs whose content is fetched when first shown: name -> load(message, stillShown). */
const lazyTabs = new Map([['headers', loadHeaders], ['raw', loadRaw], ['checks', loadChecks]]);

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

/** Open a message (fetching it marks it read). */
export async function openMessage(id) {
  shown.id = id;
  shown.message = null;
  hideReleaseForm();
  const seq = ++openSeq;
  markSelected(id);
  const summary = summaryById(id);
  $('#message-subject').textContent = summary ? summary.Subject || '(no subject)' : 'Loading…';
  showView(true);
  let m;
  try {
    m = await getJSON(`/api/v1/message/${enc(id)}`);
  } catch (err) {
    if (seq !== openSeq) return;
    if (err.status === 404) {
      showNotice('That message is no longer there.');
      navigate({ id: null });
    } else fail(err);
    return;
  }
  if (seq !== openSeq) return;
  shown.message = m;
  setRead(id, true); // the GET marked it read
  renderMessage(m);
  if (narrow.matches) $('#message-subject').focus();
}

/** Close the message page, back to the list. */
export function closeMessage() {
  const previous = shown.id;
  shown.id = null;
  shown.message = null;
  openSeq += 1;
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
  renderMessageTags(m);

  const hasHTML = Boolean(m.HTML);
  $('#html-none').hidden = hasHTML;
  $('#btn-remote').hidden = !hasHTML;
  $('#remote-note').hidden = !hasHTML;
  $('#btn-remote').disabled = false;
  $('#btn-remote').textContent = 'Load remote content';
  setFrame(hasHTML ? appURL(`/view/${enc(m.ID)}.html`) : 'about:blank', hasHTML);

  $('#text-body').textContent = m.Text || '(This message has no text part.)';
  $('#headers-table tbody').replaceChildren();
  $('#raw-body').textContent = '';
  $('#raw-download').href = appURL(`/api/v1/message/${enc(m.ID)}/raw?dl=1`);
  loadedTabs = new Set();

  const parts = [...(m.Attachments || []), ...(m.Inline || []).map((p) => ({ ...p, inline: true }))];
  $('#attachment-list').replaceChildren(...parts.map((p) => {
    const name = p.FileName || `part-${p.PartID}`;
    return el('li', { class: 'attachment' },
      el('a', { href: appURL(`/api/v1/message/${enc(m.ID)}/part/${enc(p.PartID)}`), download: name, text: name }),
      el('span', { class: 'muted', text: ` ${p.ContentType || 'application/octet-stream'} · ${humanSize(p.Size)}${p.inline ? ' · inline' : ''}` }));
  }));
  $('#attachments-none').hidden = parts.length > 0;
  $('#tab-attachments').textContent = parts.length ? `Attachments (${parts.length})` : 'Attachments';

  renderTransport(m.Transport);
  selectTab(hasHTML ? 'html' : 'text');
}

/** The Transport tab: how the message reached mailsink (SMTP envelope and connection). */
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
  if (t && t.SessionID) {
    dl.append(el('dt', { text: 'SMTP session' }), el('dd', {}, el('a', {
      id: 'transport-session', href: hashFor({ view: 'session', session: t.SessionID }),
      text: 'Show the conversation (transcript, TLS, diagnosis)',
    })));
  }
}

function selectTab(name, focus = false) {
  for (const tab of document.querySelectorAll(TABS)) {
    const on = tab.dataset.tab === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(tab.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) tab.focus();
  }
  loadTab(name);
}

/** Fetch a lazy tab's content the first time it is shown for this message. */
async function loadTab(name) {
  const m = shown.message;
  const load = lazyTabs.get(name);
  if (!m || !load || loadedTabs.has(name)) return;
  loadedTabs.add(name);
  try {
    await load(m, () => shown.message === m);
  } catch (err) {
    loadedTabs.delete(name);
    fail(err);
  }
}

async function loadHeaders(m, stillShown) {
  const headers = await getJSON(`/api/v1/message/${enc(m.ID)}/headers`);
  if (!stillShown()) return;
  $('#headers-table tbody').replaceChildren(...Object.entries(headers).flatMap(([key, values]) =>
    [].concat(values).map((v) => el('tr', {}, el('th', { scope: 'row', text: key }), el('td', { text: v })))));
}

async function loadRaw(m, stillShown) {
  const text = await (await api('GET', `/api/v1/message/${enc(m.ID)}/raw`)).text();
  if (!stillShown()) return;
  $('#raw-body').textContent = text;
}

/** Arrow keys, Home and End move between tabs (the WAI-ARIA tabs pattern). */
function onTabKey(e) {
  const tabs = [...document.querySelectorAll(TABS)];
  const i = tabs.indexOf(e.target);
  const target = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
  if (i < 0 || target === undefined) return;
  e.preventDefault();
  e.stopPropagation();
  selectTab(tabs[(target + tabs.length) % tabs.length].dataset.tab, true);
}

/** Wire the tabs, the back button and "Load remote content". */
export function initMessage() {
  $('#btn-back').addEventListener('click', back);
  $('#btn-remote').addEventListener('click', () => {
    if (!shown.message) return;
    setFrame(appURL(`/view/${enc(shown.message.ID)}.html?remote=1`));
    $('#btn-remote').disabled = true;
    $('#btn-remote').textContent = 'Remote content allowed';
  });
  for (const tab of document.querySelectorAll(TABS)) {
    tab.addEventListener('click', () => selectTab(tab.dataset.tab));
    tab.addEventListener('keydown', onTabKey);
  }
  initChecks();
}
