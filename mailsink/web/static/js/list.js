/*
 * The message list: one page of summaries (newest first), search, paging and counts.
 *
 * Hooks for end-to-end tests:
 *   #search                   search input; Enter (or #btn-search) runs it, #btn-search-clear clears
 *   #message-list             the list (role=listbox); rows .message-row[data-id="ID"]
 *                             (role=option), class "unread" when unread, class "selected" and
 *                             aria-selected="true" for the open message; #list-empty when empty;
 *                             rows with lint errors marked by lintmarks.js, tag chips by tags.js
 *   #counts                   "123 messages, 4 unread" (search: "7 matches, 2 unread (of 123)")
 *   #pager, #btn-prev, #btn-next, #page-info   paging (hidden when one page holds everything)
 * The mailbox on show comes from mailboxes.js (its counts are refreshed with each load).
 */
import { $, el, enc } from './dom.js';
import { humanSize, shortAddr, when } from './format.js';
import { getJSON } from './api.js';
import { fail } from './notice.js';
import { navigate } from './router.js';
import { markLint } from './lintmarks.js';
import { tagChips } from './tags.js';
import { currentMailbox, initMailboxes, refreshMailboxes, withMailbox } from './mailboxes.js';

const LIMIT = 50;

/** The page of the list on show; other modules read it, only this one changes it. */
export const list = {
  search: '', start: 0, messages: [],
  total: 0, unread: 0, matches: 0, matchesUnread: 0,
};

let shownKey = null; // search and start of the page loaded last
let loadSeq = 0; // answers to older loads are dropped
let refreshTimer = null;
let selectedId = null; // the open message's row, as message.js last said
const fresh = new Set(); // rows that arrived live, highlighted once

/** Show the page for a search (or none) starting at start, loading it if it changed. */
export function showPage(search, start) {
  const key = `${search}\n${start}`;
  if (key === shownKey) return;
  shownKey = key;
  list.search = search;
  list.start = start;
  $('#search').value = search;
  loadList();
}

async function loadList() {
  const seq = ++loadSeq;
  const page = `start=${list.start}&limit=${LIMIT}`;
  const path = withMailbox(list.search
    ? `/api/v1/search?query=${enc(list.search)}&${page}`
    : `/api/v1/messages?${page}`);
  refreshMailboxes();
  let data;
  try {
    data = await getJSON(path);
  } catch (err) {
    if (seq === loadSeq) fail(err);
    return;
  }
  if (seq !== loadSeq) return;
  list.messages = data.messages || [];
  list.total = data.total ?? 0;
  list.unread = data.unread ?? 0;
  list.matches = data.messages_count ?? list.total;
  list.matchesUnread = data.messages_unread ?? list.unread;
  if (list.start > 0 && list.messages.length === 0 && list.matches > 0) {
    navigate({ start: Math.floor((list.matches - 1) / LIMIT) * LIMIT }); // page emptied: last page
    return;
  }
  renderList();
  renderCounts();
}

/** Reload the current page soon (at most once per burst of events or actions). */
export function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; loadList(); }, 700);
}

function rowFor(m) {
  const to = m.To || [];
  const toText = to.length ? shortAddr(to[0]) + (to.length > 1 ? ` +${to.length - 1}` : '') : '';
  const selected = m.ID === selectedId;
  let cls = 'message-row';
  if (!m.Read) cls += ' unread';
  if (selected) cls += ' selected';
  if (fresh.has(m.ID)) cls += ' fresh';
  const created = new Date(m.Created);
  const row = el('li', { class: cls, role: 'option', tabindex: '-1', 'data-id': m.ID, 'aria-selected': String(selected) },
    el('span', { class: 'dot' }, m.Read ? '' : el('span', { class: 'sr-only', text: 'Unread: ' })),
    el('span', { class: 'from', text: shortAddr(m.From) || '(no sender)' }),
    el('time', { class: 'time', datetime: m.Created, title: Number.isNaN(created.getTime()) ? null : created.toLocaleString(), text: when(m.Created) }),
    el('span', { class: 'subject' + (m.Subject ? '' : ' muted'), text: m.Subject || '(no subject)' }),
    el('span', { class: 'meta' },
      m.Attachments > 0 ? el('span', { class: 'clip', title: `${m.Attachments} attachment(s)`, 'aria-label': 'has attachments', text: '📎' }) : '',
      el('span', { class: 'size', text: humanSize(m.Size) })),
    tagChips(m.Tags),
    el('span', { class: 'line3' },
      el('span', { class: 'to', text: toText ? `To: ${toText}` : '' }),
      el('span', { class: 'snippet', text: m.Snippet ? ` — ${m.Snippet}` : '' })));
  row.sig = JSON.stringify(m); // renderList keeps rows whose summary is unchanged
  return row;
}

/** The row of a message, if it is on this page. */
export const rowById = (id) => [...document.querySelectorAll('#message-list .message-row')].find((r) => r.dataset.id === id);

/** The summary of a message, if it is on this page. */
export const summaryById = (id) => list.messages.find((m) => m.ID === id);

/** The ID delta rows after (or before, when negative) a message on this page, or null. */
export function neighbourId(id, delta) {
  const i = list.messages.findIndex((m) => m.ID === id);
  const m = i < 0 ? null : list.messages[i + delta];
  return m ? m.ID : null;
}

/** Bring the list in line with list.messages, reusing unchanged rows (keeps focus and animations). */
function renderList() {
  const ul = $('#message-list');
  const active = document.activeElement;
  const focusedId = active && ul.contains(active) ? active.dataset.id : null;
  const old = new Map([...ul.children].map((r) => [r.dataset.id, r]));
  const rows = list.messages.map((m) => {
    const row = old.get(m.ID);
    return row && row.sig === JSON.stringify(m) ? row : rowFor(m);
  });
  rows.forEach((row, i) => { if (ul.children[i] !== row) ul.insertBefore(row, ul.children[i] || null); });
  while (ul.children.length > rows.length) ul.lastElementChild.remove();
  fresh.clear();
  markSelected(selectedId);
  markLint(rows);
  const empty = $('#list-empty');
  empty.hidden = list.messages.length > 0;
  empty.textContent = list.search ? 'No messages match this search.' : 'No messages yet. Send one to the SMTP port.';
  const current = (focusedId && rowById(focusedId)) || ul.querySelector('.selected') || ul.firstElementChild;
  for (const r of rows) r.tabIndex = r === current ? 0 : -1;
  if (focusedId && current && document.activeElement !== current) current.focus();
}

function renderCounts() {
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  $('#counts').textContent = list.search
    ? `${plural(list.matches, 'match', 'matches')}, ${list.matchesUnread} unread (of ${list.total})`
    : `${plural(list.total, 'message', 'messages')}, ${list.unread} unread`;
  const of = list.search ? list.matches : list.total;
  const last = list.start + list.messages.length;
  $('#pager').hidden = list.start === 0 && of <= LIMIT;
  $('#page-info').textContent = `${list.messages.length ? list.start + 1 : 0}–${last} of ${of}`;
  $('#btn-prev').disabled = list.start <= 0;
  $('#btn-next').disabled = last >= of;
  document.title = list.unread ? `(${list.unread}) mailsink` : 'mailsink';
}

/** Mark the open message's row (none for null). */
export function markSelected(id) {
  selectedId = id;
  for (const row of document.querySelectorAll('#message-list .message-row')) {
    const on = row.dataset.id === id;
    row.classList.toggle('selected', on);
    row.setAttribute('aria-selected', String(on));
  }
}

/** Make a row the list's one tab stop and focus it. */
export function focusRow(row) {
  if (!row) return;
  for (const r of document.querySelectorAll('#message-list .message-row')) r.tabIndex = -1;
  row.tabIndex = 0;
  row.focus();
}

/** Record a read-state change locally (row, counts); idempotent. */
export function setRead(id, read) {
  const m = summaryById(id);
  if (m && m.Read !== read) {
    m.Read = read;
    const delta = read ? -1 : 1;
    list.unread = Math.max(0, list.unread + delta);
    list.matchesUnread = Math.max(0, list.matchesUnread + delta);
    renderList();
    renderCounts();
  }
}

/** Drop rows locally (after our own delete or a "delete" event); idempotent. */
export function removeRows(ids) {
  const gone = new Set(ids);
  const removed = list.messages.filter((m) => gone.has(m.ID));
  if (!removed.length) return;
  const unread = removed.filter((m) => !m.Read).length;
  list.messages = list.messages.filter((m) => !gone.has(m.ID));
  list.total = Math.max(0, list.total - removed.length);
  list.matches = Math.max(0, list.matches - removed.length);
  list.unread = Math.max(0, list.unread - unread);
  list.matchesUnread = Math.max(0, list.matchesUnread - unread);
  renderList();
  renderCounts();
}

/** Empty the list locally (after delete all or a "truncate" event). */
export function clearAll() {
  list.messages = [];
  list.total = list.unread = list.matches = list.matchesUnread = 0;
  renderList();
  renderCounts();
}

/** A message arrived: shown at once on the first page of the unsearched list. */
export function addArrived(summary) {
  if (!summary || !summary.ID || list.search || list.start !== 0 || summaryById(summary.ID)) return;
  if (currentMailbox() !== null && summary.Mailbox !== currentMailbox()) return;
  list.messages.unshift(summary);
  if (list.messages.length > LIMIT) list.messages.pop();
  list.total += 1;
  list.matches += 1;
  if (!summary.Read) { list.unread += 1; list.matchesUnread += 1; }
  fresh.add(summary.ID);
  renderList();
  renderCounts();
}

/** A message's summary changed (read state, tags). */
export function applyUpdate(summary) {
  const m = summary && summaryById(summary.ID);
  if (!m) return;
  setRead(m.ID, Boolean(summary.Read)); // adjusts the unread counts
  Object.assign(m, summary);
  renderList();
}

/** New totals for the whole mailbox. */
export function applyStats(stats) {
  if (!stats || currentMailbox() !== null) return; // totals of all mailboxes, not this one
  list.total = stats.Total ?? list.total;
  list.unread = stats.Unread ?? list.unread;
  if (!list.search) { list.matches = list.total; list.matchesUnread = list.unread; }
  renderCounts();
}

/** Wire search, the rows, paging, and the clock that keeps "5 min ago" current. */
export function initList() {
  $('#search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const query = $('#search').value.trim();
    if (query === list.search && list.start === 0) loadList();
    else navigate({ search: query, start: 0, id: null }, true);
  });
  $('#btn-search-clear').addEventListener('click', () => {
    $('#search').value = '';
    if (list.search) navigate({ search: '', start: 0 }, true);
    $('#search').focus();
  });
  $('#message-list').addEventListener('click', (e) => {
    const row = e.target.closest('.message-row');
    if (row) navigate({ id: row.dataset.id }, !selectedId);
  });
  $('#btn-prev').addEventListener('click', () => navigate({ start: Math.max(0, list.start - LIMIT), id: null }, true));
  $('#btn-next').addEventListener('click', () => navigate({ start: list.start + LIMIT, id: null }, true));
  setInterval(() => {
    for (const t of document.querySelectorAll('#message-list time')) t.textContent = when(t.getAttribute('datetime'));
  }, 60000);
  initMailboxes(() => {
    shownKey = null; // the same search and start, in another mailbox
    if (list.start === 0 && !selectedId) showPage(list.search, 0);
    else navigate({ start: 0, id: null }, true);
  });
}
