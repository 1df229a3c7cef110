/*
 * The message list's lint marker: a badge on each row whose message has lint errors (no
 * Message-ID, a line too long, ...), so broken mail stands out before it is opened.
 *
 * Lint costs the server about 1 ms a message, too much to run at intake for every message,
 * so the page asks GET /api/v1/message/{ID}/lint itself: only for rows that come into view,
 * at most MAX_PARALLEL requests at a time, each message once (a stored message never
 * changes, so the answer is kept for the page's life). Rows that arrive live or are rebuilt
 * get the same treatment through markLint().
 *
 * Hooks for end-to-end tests: a row with lint errors has class "lint-errors" and a
 * .lint-badge in its .meta whose title says how many ("2 lint errors: ...").
 */
import { el, enc } from './dom.js';
import { request } from './api.js';

const MAX_PARALLEL = 4;
const errorsById = new Map(); // message ID -> its number of lint errors
const pending = new Set(); // IDs waiting for or in a request
const waiting = []; // IDs to ask, oldest first
const watched = new Set(); // rows observed until they come into view
let running = 0;

const rowOf = (id) => document.querySelector(`#message-list .message-row[data-id="${CSS.escape(id)}"]`);

const onScreen = new IntersectionObserver((entries) => {
  for (const { target, isIntersecting } of entries) {
    if (isIntersecting) {
      ask(target.dataset.id);
      unwatch(target);
    }
  }
});

function unwatch(row) {
  onScreen.unobserve(row);
  watched.delete(row);
}

/** Mark the rows whose lint is known; watch the others until they are on screen. */
export function markLint(rows) {
  for (const row of watched) if (!row.isConnected) unwatch(row); // replaced or removed rows
  for (const row of rows) {
    const id = row.dataset.id;
    if (errorsById.has(id)) mark(row, errorsById.get(id));
    else if (!pending.has(id) && !watched.has(row)) {
      watched.add(row);
      onScreen.observe(row);
    }
  }
}

function ask(id) {
  if (!id || pending.has(id) || errorsById.has(id)) return;
  pending.add(id);
  waiting.push(id);
  next();
}

/** Start requests while fewer than MAX_PARALLEL run; skip rows gone from the list meanwhile. */
function next() {
  while (running < MAX_PARALLEL && waiting.length) {
    const id = waiting.shift();
    if (!rowOf(id)) { // paged or deleted away: asked again if its row comes back
      pending.delete(id);
      continue;
    }
    running += 1;
    lintErrors(id).then((errors) => {
      if (errors === null) return;
      errorsById.set(id, errors);
      const row = rowOf(id);
      if (row) mark(row, errors);
    }).finally(() => {
      pending.delete(id);
      running -= 1;
      next();
    });
  }
}

/** The message's number of lint errors, or null when the server did not say. */
async function lintErrors(id) {
  try {
    const res = await request('GET', `/api/v1/message/${enc(id)}/lint`);
    return res.ok ? Number((await res.json()).Errors) || 0 : null;
  } catch {
    return null; // a 401 has already been said; the row stays unmarked
  }
}

function mark(row, errors) {
  row.classList.toggle('lint-errors', errors > 0);
  if (errors <= 0 || row.querySelector('.lint-badge')) return;
  const says = `${errors} lint error${errors === 1 ? '' : 's'}: see the message's Checks tab`;
  row.querySelector('.meta').prepend(el('span', { class: 'lint-badge', title: says, 'aria-label': says, text: `⚠ ${errors}` }));
}
