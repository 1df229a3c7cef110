/*
 * The view lives in the URL fragment, #search=QUERY&start=N&id=ID, so reload and
 * back/forward restore it. Views change it with navigate(); the entry module says how the
 * page follows it.
 */

let apply = () => {};

/** Bring the page in line with the fragment now, and whenever it changes, with handler. */
export function startRouting(handler) {
  apply = handler;
  window.addEventListener('popstate', handler);
  window.addEventListener('hashchange', handler);
  handler();
}

/** The fragment's fields, with their defaults. */
export function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return {
    search: p.get('search') || '',
    start: Math.max(0, parseInt(p.get('start'), 10) || 0),
    id: p.get('id') || null,
  };
}

/** Change the fragment (push a history entry or replace the current one) and apply it. */
export function navigate(changes, push = false) {
  const next = { ...readHash(), ...changes };
  const p = new URLSearchParams();
  if (next.search) p.set('search', next.search);
  if (next.start) p.set('start', String(next.start));
  if (next.id) p.set('id', next.id);
  const url = p.toString() ? `#${p}` : location.pathname + location.search;
  history[push ? 'pushState' : 'replaceState']({ pushed: push }, '', url);
  apply();
}

/** Leave the message: back in history when we pushed the entry, else close it in place. */
export function back() {
  if (history.state && history.state.pushed) history.back();
  else navigate({ id: null });
}
