/*
 * Requests to mailsink's API, all on the page's own origin, so the browser sends the
 * credentials the person signed in with (HTTP Basic with [web] auth = required) on each.
 *
 * API used (shared/mailpit-api.md):
 *   GET    /api/v1/messages?start=&limit=       list, newest first
 *   GET    /api/v1/search?query=&start=&limit=  search, same shape
 *          (both, and DELETE / PUT /api/v1/messages, with &mailbox=NAME: that mailbox only)
 *   GET    /api/v1/mailboxes                    {"Mailboxes": [{"Name", "Total", "Unread"}]}
 *   GET    /api/v1/message/{ID}                 the message (marks it read)
 *   GET    /api/v1/message/{ID}/headers         {"Name": ["value", ...]}
 *   GET    /api/v1/message/{ID}/raw[?dl=1]      source (download with dl=1)
 *   GET    /api/v1/message/{ID}/part/{PartID}   one attachment
 *   GET    /api/v1/message/{ID}/lint            {"Findings": [...], "Errors", "Warnings"}
 *   GET    /api/v1/message/{ID}/html-check      Mailpit's HTMLCheckResponse; 400 without HTML
 *   GET    /api/v1/message/{ID}/link-check[?follow=true]   {"Errors", "Links": [...]}
 *   GET    /api/v1/message/{ID}/sa-check        Mailpit's SpamAssassinResponse; 404 when off
 *   PUT    /api/v1/messages                     {"IDs": [id], "Read": bool} or {"Read": true}
 *   DELETE /api/v1/messages                     {"IDs": [id]} or {} (all)
 *   GET    /api/v1/events                       Server-Sent Events, unnamed; data is
 *          {"Type": "new"|"update"|"delete"|"truncate"|"stats", "Data": ...}
 *   GET    /view/{ID}.html[?remote=1]           message HTML, only ever in the sandboxed iframe
 *   GET    /api/v1/webui                        {"MessageRelay": {"Enabled": bool, ...},
 *                                               "SpamAssassin": bool, ...}
 *   POST   /api/v1/message/{ID}/release         {"To": ["addr", ...]}; 200, or 400 with a
 *                                               one-sentence text/plain reason
 *   POST   /api/v1/relay/test                   {}; answers {"status": "ok"|"error", "message"}
 *   GET    /api/v1/sessions?start=&limit=&outcome=failed   SMTP sessions, newest first, with
 *                                               total, sessions_count, recent_failures
 *   GET    /api/v1/session/{ID}                 one session with its Transcript
 *   DELETE /api/v1/sessions                     {} (all the viewer may see)
 *   The event stream also carries {"Type": "session", "Data": summary} when a session ends.
 * State-changing requests always send Content-Type: application/json with a JSON body.
 *
 * Paths are written from the server's root ('/api/v1/...', '/view/...') and resolved by
 * appURL() against the folder the page is served from, so [web] base_path (e.g. /mailsink/
 * behind a proxy) needs nothing else here. That base is where this module was loaded from,
 * two folders up (static/js/api.js): no server-written value, no inline script for the CSP,
 * and right whatever path a proxy in front maps to the server's.
 */
import { showNotice } from './notice.js';

const BASE = new URL('../../', import.meta.url);

/** The same-origin path of one of mailsink's own ('/api/v1/messages', '/view/ID.html', ...). */
export function appURL(path) {
  const url = new URL(path.replace(/^\/+/, ''), BASE);
  return url.pathname + url.search;
}

/** A request that did not succeed; status is the HTTP status. */
class HttpError extends Error {
  constructor(status, text) { super(text || `HTTP ${status}`); this.status = status; }
}

/**
 * Send a request (body, when given, as JSON) and return the response whatever its status,
 * except a 401: that shows the sign-in notice and throws.
 */
export async function request(method, path, body) {
  const init = { method, headers: {}, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(appURL(path), init);
  if (res.status === 401) {
    showNotice('Sign-in needed: this server asks for a user name and password. Reload the page to sign in.', true);
    throw new HttpError(401, 'not signed in');
  }
  return res;
}

/** Like request(), but any status other than 2xx throws an HttpError with the server's words. */
export async function api(method, path, body) {
  const res = await request(method, path, body);
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).trim().slice(0, 200);
    throw new HttpError(res.status, `${res.status} ${text || res.statusText}`);
  }
  return res;
}

/** GET a JSON document. */
export const getJSON = async (path) => (await api('GET', path)).json();
