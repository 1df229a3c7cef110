/*
 * The view lives in the URL fragment, so reload and back/forward restore it:
 *   #search=QUERY&start=N&id=ID     the message list (and the open message)
 *   #/sessions[?outcome=failed]     the Sessions view
 *   #/session/ID                    one SMTP session
 * Views change it with navigate() or with plain links to a fragment (followed here, so
 * back() can return); the entry module says how the page follows it.
 */

let apply = () => {};

const SESSIONS = '/sessions';
const SESSION = '/session/';

/** Bring the page in line with the fragment now, and whenever it changes, with handler. */
export function startRouting(handler) {
  apply = handler;
  window.addEventListener('popstate', handler);
  window.addEventListener('hashchange', handler);
  document.addEventListener('click', followLink);
  handler();
}

/** The fragment's fields, with their defaults; view is "messages", "sessions" or "session". */
export function readHash() {
  const hash = location.hash.slice(1);
  const fields = { view: 'messages', search: '', start: 0, id: null, outcome: '', session: null };
  if (hash.startsWith(SESSION)) {
    let session = '';
    try { session = decodeURIComponent(hash.slice(SESSION.length)); } catch { /* malformed: the list */ }
    return { ...fields, view: session ? 'session' : 'sessions', session: session || null };
  }
  if (hash === SESSIONS || hash.startsWith(`${SESSIONS}?`)) {
    const p = new URLSearchParams(hash.slice(SESSIONS.length + 1));
    return { ...fields, view: 'sessions', outcome: p.get('outcome') === 'failed' ? 'failed' : '' };
  }
  const p = new URLSearchParams(hash);
  return {
    ...fields,
    search: p.get('search') || '',
    start: Math.max(0, parseInt(p.get('start'), 10) || 0),
    id: p.get('id') || null,
  };
}

/** The fragment (with its "#") for fields as readHash() gives them; "" for the bare list. */
export function hashFor(fields) {
  if (fields.view === 'session' && fields.session) return `#${SESSION}${encodeURIComponent(fields.session)}`;
  if (fields.view === 'sessions' || fields.view === 'session') {
    return fields.outcome ? `#${SESSIONS}?outcome=${encodeURIComponent(fields.outcome)}` : `#${SESSIONS}`;
  }
  const p = new URLSearchParams();
  if (fields.search) p.set('search', fields.search);
  if (fields.start) p.set('start', String(fields.start));
  if (fields.id) p.set('id', fields.id);
  return p.toString() ? `#${p}` : '';
}

function go(url, push) {
  history[push ? 'pushState' : 'replaceState']({ pushed: push }, '', url || location.pathname + location.search);
  apply();
}

/** Change the fragment (push a history entry or replace the current one) and apply it. */
export function navigate(changes, push = false) {
  go(hashFor({ ...readHash(), ...changes }), push);
}

/** Leave a page: back in history when we pushed the entry, else go to fallback in place. */
export function back(fallback = { id: null }) {
  if (history.state && history.state.pushed) history.back();
  else navigate(fallback);
}

/** A plain click on a link to a fragment of this page: a pushed entry, so back() returns. */
function followLink(e) {
  const link = e.target.closest && e.target.closest('a[href^="#"]:not([download])');
  if (!link || e.defaultPrevented || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  go(link.getAttribute('href') === '#' ? '' : link.getAttribute('href'), true);
}
