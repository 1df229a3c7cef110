/*
 * What the toolbars and the keyboard do to messages: delete, delete all, mark read or
 * unread, move between messages.
 *
 * Hooks for end-to-end tests: #btn-delete, #btn-delete-all (confirm() dialog first),
 * #btn-mark-read, #btn-mark-unread, #btn-mark-all-read. Delete all and Mark all read act on
 * the mailbox on show (see mailboxes.js).
 * Keyboard: j/k (or ↓/↑ in the list) next/previous, Enter opens, Delete deletes, / searches,
 * Esc closes the message.
 */
import { $ } from './dom.js';
import { api } from './api.js';
import { fail } from './notice.js';
import { back, navigate } from './router.js';
import { clearAll, focusRow, list, neighbourId, refreshSoon, removeRows, rowById, setRead } from './list.js';
import { shown } from './message.js';
import { withMailbox } from './mailboxes.js';

/** The message an action applies to: the open one, else the focused row. */
function currentId() {
  if (shown.id) return shown.id;
  const row = document.activeElement?.closest?.('.message-row');
  return row ? row.dataset.id : null;
}

async function deleteMessage() {
  const id = currentId();
  if (!id) return;
  const next = neighbourId(id, 1) || neighbourId(id, -1);
  try {
    await api('DELETE', '/api/v1/messages', { IDs: [id] });
  } catch (err) { fail(err); return; }
  removeRows([id]);
  if (shown.id === id) navigate({ id: null });
  focusRow(next && rowById(next));
  refreshSoon();
}

async function deleteAll() {
  const what = list.total === 1 ? 'the one message' : `all ${list.total} messages`;
  if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
  try {
    await api('DELETE', withMailbox('/api/v1/messages'), {});
  } catch (err) { fail(err); return; }
  clearAll();
  navigate({ id: null, start: 0 });
  refreshSoon();
}

async function markRead(read) {
  const id = currentId();
  if (!id) return;
  try {
    await api('PUT', '/api/v1/messages', { IDs: [id], Read: read });
  } catch (err) { fail(err); return; }
  setRead(id, read);
  refreshSoon();
}

async function markAllRead() {
  try {
    await api('PUT', withMailbox('/api/v1/messages'), { Read: true });
  } catch (err) { fail(err); return; }
  for (const m of list.messages) setRead(m.ID, true);
  refreshSoon();
}

function move(delta) {
  const from = currentId() || (document.querySelector('#message-list [tabindex="0"]') || {}).dataset?.id;
  const target = from ? neighbourId(from, delta) : list.messages[0]?.ID;
  if (!target) return;
  if (shown.id) navigate({ id: target }); // reading: open the next one
  focusRow(rowById(target));
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t.matches('input, textarea, select, [contenteditable]')) {
    if (e.key === 'Escape' && t.id === 'search') t.blur();
    return;
  }
  const inList = Boolean(t.closest('#message-list'));
  switch (e.key) {
    case 'j': move(1); break;
    case 'k': move(-1); break;
    case 'ArrowDown': if (!inList) return; move(1); break;
    case 'ArrowUp': if (!inList) return; move(-1); break;
    case 'Enter': case ' ':
      if (!t.classList.contains('message-row')) return;
      navigate({ id: t.dataset.id }, !shown.id);
      break;
    case 'Delete': deleteMessage(); break;
    case '/': $('#search').focus(); break;
    case 'Escape': if (!shown.id) return; back(); break;
    default: return;
  }
  e.preventDefault();
}

/** Wire the toolbar buttons and the keyboard shortcuts. */
export function initActions() {
  $('#btn-delete').addEventListener('click', deleteMessage);
  $('#btn-delete-all').addEventListener('click', deleteAll);
  $('#btn-mark-read').addEventListener('click', () => markRead(true));
  $('#btn-mark-unread').addEventListener('click', () => markRead(false));
  $('#btn-mark-all-read').addEventListener('click', markAllRead);
  document.addEventListener('keydown', onKey);
}
