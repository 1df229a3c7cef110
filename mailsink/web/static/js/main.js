/*
 * mailsink web UI: plain JavaScript ES modules, no build step, no external resources.
 *
 * This entry module wires the views together, routes between them by the URL fragment,
 * and follows the live event stream. One module per view or concern:
 *   list.js     message list, search, paging, counts
 *   mailboxes.js the mailbox switcher ([mailbox:NAME] and per-user mailboxes, unread counts)
 *   message.js  the message page and its tabs (HTML, text, headers, raw, attachments, transport)
 *   checks.js   the message's Checks tab (lint, HTML check, link check, spam check)
 *   lintmarks.js the list's marker on messages whose lint has errors
 *   tags.js     tag chips on rows and the open message, filter by a click, add and remove
 *   actions.js  delete, mark read, move: toolbar buttons and keyboard shortcuts
 *   relay.js    Test relay and Release
 *   sessions.js the Sessions view (SMTP conversations); session.js one session and its transcript
 *   banner.js   "N clients failed to deliver" on the message list
 *   router.js   the URL fragment (#search=QUERY&start=N&id=ID, #/sessions, #/session/ID) and history
 *   api.js      requests to the API (the routes used are listed there)
 *   notice.js   the notice bar; dom.js, format.js small shared helpers
 * Each module lists the stable hooks (element IDs, classes) end-to-end tests rely on.
 *
 * Hooks here: #live-indicator, text "live" (class "live") while the EventSource is open,
 * else "offline" (class "offline"); #nav-messages and #nav-sessions, the header's links to
 * the two views (aria-current="page" on the one on show); #messages-view and #sessions-view.
 */
import { $ } from './dom.js';
import { appURL } from './api.js';
import { initActions } from './actions.js';
import {
  addArrived, applyStats, applyUpdate, clearAll, initList, refreshSoon, removeRows, showPage,
} from './list.js';
import { closeMessage, initMessage, openMessage, shown, shownMessage } from './message.js';
import { initNotice } from './notice.js';
import { initRelay, loadWebUI } from './relay.js';
import { hashFor, navigate, readHash, startRouting } from './router.js';
import { addSession, initSessions, leaveSessions, showSessions } from './sessions.js';
import { initSession } from './session.js';
import { bannerOnList, initBanner, noteSession, refreshBanner } from './banner.js';
import { followUpdate } from './tags.js';

/** Show the message list or the Sessions view; the header's links say which. */
function showView(h) {
  const onMessages = h.view === 'messages';
  $('#messages-view').hidden = !onMessages;
  $('#sessions-view').hidden = onMessages;
  document.body.classList.toggle('show-sessions', !onMessages);
  for (const [link, on] of [['#nav-messages', onMessages], ['#nav-sessions', !onMessages]]) {
    if (on) $(link).setAttribute('aria-current', 'page'); else $(link).removeAttribute('aria-current');
  }
  if (onMessages) $('#nav-messages').setAttribute('href', hashFor(h) || '#'); // back to the same page
  bannerOnList(onMessages);
}

/** Bring the views in line with the URL fragment. */
function applyHash() {
  const h = readHash();
  showView(h);
  if (h.view !== 'messages') {
    if (shown.id) closeMessage();
    showSessions(h.outcome, h.session);
    return;
  }
  leaveSessions();
  showPage(h.search, h.start);
  if (h.id !== shown.id) {
    if (h.id) openMessage(h.id); else closeMessage();
  }
}

function setLive(on) {
  const ind = $('#live-indicator');
  ind.textContent = on ? 'live' : 'offline';
  ind.className = on ? 'live' : 'offline';
  ind.title = on ? 'Live updates: connected' : 'Live updates: disconnected, retrying';
}

function handleEvent(event) {
  const data = event.Data;
  switch (event.Type) {
    case 'new':
      addArrived(data);
      refreshSoon(); // re-runs an active search, fixes paging and counts
      break;
    case 'update':
      applyUpdate(data);
      followUpdate(data);
      break;
    case 'delete':
      removeRows((data && data.IDs) || []);
      if (data && (data.IDs || []).includes(shown.id)) navigate({ id: null });
      refreshSoon();
      break;
    case 'truncate':
      clearAll();
      if (shown.id) navigate({ id: null });
      break;
    case 'stats':
      applyStats(data);
      break;
    case 'session':
      addSession(data);
      noteSession(data);
      break;
    default:
      break;
  }
}

let retryDelay = 2000;
function connectEvents() {
  if (!window.EventSource) return;
  const source = new EventSource(appURL('/api/v1/events'));
  source.onopen = () => { // catch up on missed events
    setLive(true);
    retryDelay = 2000;
    refreshSoon();
    refreshBanner();
  };
  source.onerror = () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED) { // refused (e.g. 401/404): retry ourselves
      setTimeout(connectEvents, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 60000);
    }
  };
  source.onmessage = (e) => {
    let event;
    try { event = JSON.parse(e.data); } catch { return; }
    if (event && typeof event === 'object') handleEvent(event);
  };
}

initNotice();
initList();
initMessage();
initRelay(shownMessage);
initActions();
initSessions();
initSession();
initBanner();
setLive(false);
startRouting(applyHash);
connectEvents();
loadWebUI();
