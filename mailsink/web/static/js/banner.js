/*
 * The banner on the message list when SMTP clients failed to deliver in the last five
 * minutes ("2 clients failed to deliver: see Sessions"), from recent_failures of
 * GET /api/v1/sessions?limit=1, refreshed when a session ends and each minute while it shows.
 * Dismissed, it stays away until another session fails.
 *
 * Hooks for end-to-end tests: #failure-banner (hidden when no failure is recent, on other
 * views, or dismissed), #failure-banner-text, #failure-banner-link (to #/sessions?outcome=failed),
 * #btn-banner-close.
 */
import { $ } from './dom.js';
import { getJSON } from './api.js';
import { isFailure } from './session.js';

const banner = { failures: 0, dismissed: false, onList: true };
let refreshTimer = null;
let loadSeq = 0;

function render() {
  const n = banner.failures;
  $('#failure-banner-text').textContent = `${n} ${n === 1 ? 'client' : 'clients'} failed to deliver:`;
  $('#failure-banner').hidden = !(banner.onList && n > 0 && !banner.dismissed);
}

/** Ask the server how many sessions failed lately. */
export async function refreshBanner() {
  const seq = ++loadSeq;
  let data;
  try {
    data = await getJSON('/api/v1/sessions?limit=1');
  } catch { return; } // no banner; a 401 has already been said
  if (seq !== loadSeq) return;
  banner.failures = Number(data.recent_failures) || 0;
  render();
}

function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refreshBanner(); }, 300);
}

/** A session ended (the live event); a failure brings a dismissed banner back. */
export function noteSession(summary) {
  if (isFailure(summary)) banner.dismissed = false;
  refreshSoon();
}

/** The banner belongs to the message list: shown there only, and checked again on return. */
export function bannerOnList(on) {
  if (on && !banner.onList && banner.failures > 0) refreshBanner(); // sessions may be deleted
  banner.onList = on;
  render();
}

/** Wire the dismiss button and the minute clock (failures age out after five minutes). */
export function initBanner() {
  $('#btn-banner-close').addEventListener('click', () => { banner.dismissed = true; render(); });
  setInterval(() => { if (banner.failures > 0) refreshBanner(); }, 60000);
  refreshBanner();
}
