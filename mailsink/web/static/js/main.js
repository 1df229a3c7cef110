/*
 * mailsink web UI: plain JavaScript ES modules, no build step, no external resources.
 *
 * This entry module wires the views together, routes between them by the URL fragment,
 * and follows the live event stream. One module per view or concern:
 *   list.js     message list, search, paging, counts
 *   message.js  the message page and its tabs (HTML, text, headers, raw, attachments, transport)
 *   actions.js  delete, mark read, move: toolbar buttons and keyboard shortcuts
 *   relay.js    Test relay and Release
 *   router.js   the URL fragment (#search=QUERY&start=N&id=ID) and history
 *   api.js      requests to the API (the routes used are listed there)
 *   notice.js   the notice bar; dom.js, format.js small shared helpers
 * Each module lists the stable hooks (element IDs, classes) end-to-end tests rely on.
 *
 * Hooks here: #live-indicator, text "live" (class "live") while the EventSource is open,
 * else "offline" (class "offline").
 */
import { $ } from './dom.js';
import { initActions } from './actions.js';
import {
  addArrived, applyStats, applyUpdate, clearAll, initList, refreshSoon, removeRows, showPage,
} from './list.js';
import { closeMessage, initMessage, openMessage, shown, shownMessage } from './message.js';
import { initNotice } from './notice.js';
import { initRelay, loadWebUI } from './relay.js';
import { navigate, readHash, startRouting } from './router.js';

/** Bring the list and the message page in line with the URL fragment. */
function applyHash() {
  const h = readHash();
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
    default:
      break;
  }
}

let retryDelay = 2000;
function connectEvents() {
  if (!window.EventSource) return;
  const source = new EventSource('/api/v1/events');
  source.onopen = () => { setLive(true); retryDelay = 2000; refreshSoon(); }; // catch up on missed events
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
setLive(false);
startRouting(applyHash);
connectEvents();
loadWebUI();
