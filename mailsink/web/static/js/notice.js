/*
 * The one notice bar: errors, the sign-in message after a 401, and successes.
 *
 * Hooks: #notice / #notice-text; class "ok" (green) for successes, else red;
 * #btn-notice-close dismisses it.
 */
import { $ } from './dom.js';

let noticeTimer = null;

/** Show a line of text; it goes away after 10 s unless sticky. */
export function showNotice(text, sticky = false, ok = false) {
  $('#notice-text').textContent = text;
  $('#notice').classList.toggle('ok', ok);
  $('#notice').hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => { $('#notice').hidden = true; }, 10000);
}

/** Report a failed request (a 401 has already been reported by the API helpers). */
export function fail(err) {
  if (err && err.status === 401) return;
  showNotice(`Request failed: ${err && err.message ? err.message : err}`);
}

/** Wire the dismiss button. */
export function initNotice() {
  $('#btn-notice-close').addEventListener('click', () => { $('#notice').hidden = true; });
}
