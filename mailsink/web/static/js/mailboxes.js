/*
 * The mailbox switcher: which mailbox the message list shows (issue 13 §2).
 *
 * GET /api/v1/mailboxes answers the mailboxes this person may see ([mailbox:NAME] sections,
 * per-user folders, "" the shared Maildir) with their message and unread counts; the list
 * then asks /api/v1/messages and /api/v1/search with &mailbox=NAME, and "Delete all" and
 * "Mark all read" act on that mailbox only. The choice lives in this page, not in the URL.
 *
 * Hooks for end-to-end tests:
 *   #mailbox-switcher   a <select>, hidden while there is only the shared Maildir; option
 *                       values "*" (all mailboxes) and "=NAME" ("=" alone: the shared one);
 *                       each option's text ends "(N unread)" when N > 0
 */
import { $, el, enc } from './dom.js';
import { getJSON } from './api.js';

const ALL = '*';
let current = null; // null: every mailbox this person may see; else a mailbox name
let refreshing = null;
let again = false;

/** The mailbox on show (null: all). */
export const currentMailbox = () => current;

/** The query parameter that narrows a list, search or delete to the mailbox on show. */
export const mailboxParam = () => (current === null ? '' : `mailbox=${enc(current)}`);

/** path with the mailbox parameter added, if a mailbox is chosen. */
export function withMailbox(path) {
  const param = mailboxParam();
  if (!param) return path;
  return path + (path.includes('?') ? '&' : '?') + param;
}

const label = (name) => (name === '' ? 'Shared' : name);
const unread = (n) => (n > 0 ? ` (${n} unread)` : '');

function render(mailboxes) {
  const select = $('#mailbox-switcher');
  const names = mailboxes.map((m) => m.Name);
  if (current !== null && !names.includes(current)) current = null; // gone, or not ours
  const total = mailboxes.reduce((n, m) => n + (m.Unread || 0), 0);
  const options = [el('option', { value: ALL, text: `All mailboxes${unread(total)}` }),
    ...mailboxes.map((m) => el('option', { value: `=${m.Name}`, text: `${label(m.Name)}${unread(m.Unread || 0)}` }))];
  select.replaceChildren(...options);
  select.value = current === null ? ALL : `=${current}`;
  select.hidden = mailboxes.length < 2 && current === null;
}

/** Ask for the mailboxes and their counts again (one request at a time, the last wins). */
export async function refreshMailboxes() {
  if (refreshing) { again = true; return; }
  refreshing = getJSON('/api/v1/mailboxes');
  try {
    render((await refreshing).Mailboxes || []);
  } catch {
    // the list itself reports failures; the switcher keeps what it showed
  } finally {
    refreshing = null;
    if (again) { again = false; refreshMailboxes(); }
  }
}

/** Wire the switcher; changed() runs when another mailbox is chosen. */
export function initMailboxes(changed) {
  $('#mailbox-switcher').addEventListener('change', (e) => {
    const value = e.target.value;
    current = value === ALL ? null : value.slice(1);
    changed();
  });
  refreshMailboxes();
}
