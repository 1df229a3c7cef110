/*
 * The Sessions view: every SMTP conversation, newest first, failures in red with their
 * diagnosis in the row; a filter (all or failed), "Load more", "Delete all", and new
 * sessions live from the "session" event. One session opens on a page of its own
 * (session.js).
 *
 * Hooks for end-to-end tests:
 *   #sessions-view            the whole view (list or one session); hidden on the message list
 *   #session-list             rows .session-row[data-id="ID"], class "failed" for refused,
 *                             failed and dropped; class "fresh" when it arrived live. In a row:
 *                             a.session-link (to #/session/ID), time, .outcome, .listener,
 *                             .client, .user, .helo, .messages and, when there is one, .diagnosis
 *   #filter-all, #filter-failed   the filter (aria-pressed="true" on the one in force)
 *   #sessions-counts          "5 sessions" (failed: "2 failed (of 5)")
 *   #sessions-empty           shown when no session matches
 *   #sessions-more, #btn-sessions-more   the next page, shown while there are more
 *   #btn-sessions-delete-all  DELETE /api/v1/sessions after a confirm() dialog
 */
import { $, el, enc } from './dom.js';
import { when } from './format.js';
import { api, getJSON } from './api.js';
import { fail } from './notice.js';
import { hashFor, navigate } from './router.js';
import { closeSession, isFailure, openSession, outcomeBadge, userText } from './session.js';

const LIMIT = 50;

/** The list as loaded: its filter, rows and counts; key is null while it is not loaded. */
const state = { key: null, outcome: '', sessions: [], total: 0, matching: 0 };
let loadSeq = 0; // answers to older loads are dropped
const fresh = new Set(); // rows that arrived live, highlighted once

/** Show the list (filter outcome, "" or "failed") or, with session, one session. */
export function showSessions(outcome, session) {
  $('#session-list-pane').hidden = Boolean(session);
  if (session) {
    openSession(session);
    return;
  }
  closeSession();
  if (state.key !== outcome) {
    state.key = outcome;
    state.outcome = outcome;
    renderFilter();
    load(0);
  }
}

/** Leave the view (back to the messages): the list is loaded afresh next time. */
export function leaveSessions() {
  closeSession();
  state.key = null;
  loadSeq += 1;
}

async function load(start) {
  const seq = ++loadSeq;
  const filter = state.outcome ? `&outcome=${enc(state.outcome)}` : '';
  let data;
  try {
    data = await getJSON(`/api/v1/sessions?start=${start}&limit=${LIMIT}${filter}`);
  } catch (err) {
    if (seq === loadSeq) fail(err);
    return;
  }
  if (seq !== loadSeq) return;
  const page = data.sessions || [];
  if (start === 0) state.sessions = page;
  else {
    const have = new Set(state.sessions.map((s) => s.ID));
    state.sessions.push(...page.filter((s) => !have.has(s.ID)));
  }
  state.total = data.total ?? 0;
  state.matching = data.sessions_count ?? state.total;
  render();
}

function rowFor(s) {
  let cls = 'session-row';
  if (isFailure(s)) cls += ' failed';
  if (fresh.has(s.ID)) cls += ' fresh';
  const started = new Date(s.Started);
  const stored = (s.Messages || []).length;
  const user = userText(s);
  return el('li', { class: cls, 'data-id': s.ID },
    el('a', { class: 'session-link', href: hashFor({ view: 'session', session: s.ID }) },
      el('time', { datetime: s.Started, title: Number.isNaN(started.getTime()) ? null : started.toLocaleString(), text: when(s.Started) }),
      outcomeBadge(s),
      el('span', { class: 'listener', title: 'Listener', text: `[${s.Listener}]` }),
      el('span', { class: 'client', title: 'Client address', text: s.Client || '' }),
      el('span', { class: 'user', title: user ? 'User (mechanism)' : null, text: user }),
      el('span', { class: 'helo', title: 'HELO/EHLO name', text: s.Helo || '' }),
      el('span', { class: 'messages', text: stored ? `${stored} message${stored === 1 ? '' : 's'}` : '' }),
      s.Diagnosis ? el('span', { class: 'diagnosis', text: s.Diagnosis }) : ''));
}

function render() {
  $('#session-list').replaceChildren(...state.sessions.map(rowFor));
  fresh.clear();
  const empty = $('#sessions-empty');
  empty.hidden = state.sessions.length > 0;
  empty.textContent = state.outcome ? 'No failed sessions.' : 'No SMTP sessions yet.';
  const plural = (n) => `${n} session${n === 1 ? '' : 's'}`;
  $('#sessions-counts').textContent = state.outcome
    ? `${state.matching} failed (of ${state.total})`
    : plural(state.total);
  $('#sessions-more').hidden = state.sessions.length >= state.matching;
}

function renderFilter() {
  for (const button of document.querySelectorAll('#session-filter button')) {
    button.setAttribute('aria-pressed', String(button.dataset.outcome === state.outcome));
  }
}

/** A session ended (the live event): at the top of the list when it matches the filter. */
export function addSession(summary) {
  if (state.key === null || !summary || !summary.ID) return;
  if (state.sessions.some((s) => s.ID === summary.ID)) return;
  state.total += 1;
  if (!state.outcome || isFailure(summary)) {
    state.sessions.unshift(summary);
    state.matching += 1;
    fresh.add(summary.ID);
  }
  render();
}

async function deleteAll() {
  const what = state.total === 1 ? 'the one SMTP session' : `all ${state.total} SMTP sessions`;
  if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
  try {
    await api('DELETE', '/api/v1/sessions', {});
  } catch (err) { fail(err); return; }
  state.sessions = [];
  state.total = state.matching = 0;
  render();
}

/** Wire the filter, "Load more", "Delete all" and the clock that keeps "5 min ago" current. */
export function initSessions() {
  for (const button of document.querySelectorAll('#session-filter button')) {
    button.addEventListener('click', () => {
      if (button.dataset.outcome !== state.outcome) navigate({ view: 'sessions', outcome: button.dataset.outcome }, true);
    });
  }
  $('#btn-sessions-more').addEventListener('click', () => load(state.sessions.length));
  $('#btn-sessions-delete-all').addEventListener('click', deleteAll);
  setInterval(() => {
    for (const t of document.querySelectorAll('#session-list time')) t.textContent = when(t.getAttribute('datetime'));
  }, 60000);
}
