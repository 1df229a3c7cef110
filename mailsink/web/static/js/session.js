/*
 * One SMTP session: what went wrong (the diagnosis, first), the connection (TLS, login),
 * the messages it stored, each a link to the message, and the transcript.
 *
 * Everything the client chose (HELO name, user, the transcript, words in the diagnosis) is
 * set as text, never parsed as HTML.
 *
 * Hooks for end-to-end tests:
 *   #session-view             the session page; hidden while none is open
 *   #session-title            "Session from ADDRESS:PORT"; class "failed" for a failure
 *   #session-diagnosis        the diagnosis (hidden when the session went well)
 *   #session-meta             dl: Outcome, Error, Started, Duration, Listener, Client,
 *                             HELO/EHLO name, TLS, User, Messages stored, Session ID
 *   #session-messages a.session-message[data-id]   links to the stored messages (#id=ID)
 *   #session-transcript tbody tr   one per entry: class side-client, side-server or
 *                             side-note; cells .at (time), .side (C, S or *), .text
 *   #btn-session-back         back to the list (Escape too)
 */
import { $, el, enc } from './dom.js';
import { clockTime, duration, longDate } from './format.js';
import { getJSON } from './api.js';
import { fail, showNotice } from './notice.js';
import { back, hashFor, navigate } from './router.js';

/** Outcomes that mean a client failed to deliver (the API's outcome=failed). */
export const FAILURES = new Set(['refused', 'failed', 'dropped']);

/** Whether a session summary is a failure. */
export const isFailure = (s) => Boolean(s) && FAILURES.has(s.Outcome);

/** The outcome as a badge. */
export const outcomeBadge = (s) => el('span', {
  class: `outcome outcome-${isFailure(s) ? 'failure' : s.Outcome}`, title: 'Outcome', text: s.Outcome || '?',
});

/** Who logged in, with the mechanism, and whether the login worked; "" for nobody. */
export function userText(s) {
  if (!s.User) return '';
  const how = s.Mechanism ? ` (${s.Mechanism})` : '';
  return s.LoggedIn ? `${s.User}${how}` : `${s.User}${how}, login failed`;
}

/** TLS as one line: "none (plaintext)", or the mode, version and cipher. */
export function tlsText(tls) {
  if (!tls || !tls.Mode || tls.Mode === 'none') return 'none (plaintext)';
  const mode = tls.Mode === 'starttls' ? 'STARTTLS' : 'implicit TLS';
  return [mode, tls.Version, tls.Cipher].filter(Boolean).join(', ');
}

/** Messages whose subject is looked up for their link (the rest show their ID). */
const NAMED_MESSAGES = 20;
const SIDES = { C: ['side-client', 'client'], S: ['side-server', 'mailsink'], '*': ['side-note', 'note'] };

/** The session on show: its ID at once (else null). */
const shown = { id: null };
let openSeq = 0; // answers for a session no longer open are dropped

/** Show one session, loading it (nothing to do when it is on show already). */
export async function openSession(id) {
  if (id === shown.id) return;
  shown.id = id;
  const seq = ++openSeq;
  $('#session-view').hidden = false;
  $('#session-title').textContent = 'Loading…';
  $('#session-title').className = '';
  $('#session-diagnosis').hidden = true;
  $('#session-meta').replaceChildren();
  $('#session-transcript tbody').replaceChildren();
  let s;
  try {
    s = await getJSON(`/api/v1/session/${enc(id)}`);
  } catch (err) {
    if (seq !== openSeq) return;
    if (err.status === 404) {
      showNotice('That session is no longer there.');
      navigate({ view: 'sessions', session: null });
    } else fail(err);
    return;
  }
  if (seq !== openSeq) return;
  renderSession(s);
  nameMessages(s.Messages || [], () => seq === openSeq);
  $('#session-title').focus();
}

/** Close the session page. */
export function closeSession() {
  shown.id = null;
  openSeq += 1;
  $('#session-view').hidden = true;
}

function renderSession(s) {
  const title = $('#session-title');
  title.textContent = `Session from ${s.Client || 'an unknown client'}`;
  title.className = isFailure(s) ? 'failed' : '';
  const diagnosis = $('#session-diagnosis');
  diagnosis.textContent = s.Diagnosis || '';
  diagnosis.hidden = !s.Diagnosis;

  const meta = $('#session-meta');
  const field = (label, ...value) => meta.append(el('dt', { text: label }), el('dd', {}, ...value));
  field('Outcome', outcomeBadge(s));
  if (s.Error) field('Error', el('span', { class: 'error-text', text: s.Error }));
  field('Started', longDate(s.Started));
  field('Duration', duration(s.Started, s.Ended) || '—');
  field('Listener', `[${s.Listener}]`);
  field('Client', s.Client || '—');
  field('HELO/EHLO name', s.Helo || '(none)');
  field('TLS', tlsText(s.TLS));
  field('User', userText(s) || '(none)');
  const ids = s.Messages || [];
  field('Messages stored', ids.length
    ? el('ul', { id: 'session-messages' }, ...ids.map((id) => el('li', {},
      el('a', { class: 'session-message', 'data-id': id, href: hashFor({ view: 'messages', id }), text: id }))))
    : '(none)');
  field('Session ID', el('code', { text: s.ID }));

  $('#session-transcript tbody').replaceChildren(...(s.Transcript || []).map((entry) => {
    const [cls, who] = SIDES[entry.Side] || SIDES['*'];
    return el('tr', { class: cls },
      el('td', { class: 'at', title: entry.Time, text: clockTime(entry.Time) }),
      el('td', { class: 'side', title: who, text: entry.Side }),
      el('td', { class: 'text', text: entry.Text }));
  }));
}

/**
 * Put each stored message's subject on its link (its headers do not mark it read); a
 * message deleted since says so. Only the first few: a session may have stored hundreds.
 */
async function nameMessages(ids, stillShown) {
  for (const id of ids.slice(0, NAMED_MESSAGES)) {
    let subject;
    try {
      const headers = await getJSON(`/api/v1/message/${enc(id)}/headers`);
      subject = [].concat(headers.Subject || [])[0] || '(no subject)';
    } catch (err) {
      if (!stillShown()) return;
      if (err.status === 404) {
        const link = document.querySelector(`#session-messages a[data-id="${CSS.escape(id)}"]`);
        if (link) link.replaceWith(el('span', { class: 'muted', text: `${id} (deleted since)` }));
      }
      continue;
    }
    if (!stillShown()) return;
    const link = document.querySelector(`#session-messages a[data-id="${CSS.escape(id)}"]`);
    if (link) link.replaceChildren(subject, el('span', { class: 'muted', text: ` · ${id}` }));
  }
}

/** Wire the back button and Escape. */
export function initSession() {
  const toList = () => back({ view: 'sessions', session: null });
  $('#btn-session-back').addEventListener('click', toList);
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || !shown.id || e.target.matches('input, textarea, select')) return;
    e.preventDefault();
    toList();
  });
}
