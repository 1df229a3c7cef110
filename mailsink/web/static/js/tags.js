/*
 * Tags (Mailpit's, kept as Maildir keywords): chips on each row and on the open message, a
 * click on a chip filters the list by it (a tag: search), and the message page adds and
 * removes its tags with PUT /api/v1/tags {"IDs": [id], "Tags": [...]} (the whole new list).
 *
 * Hooks for end-to-end tests:
 *   .tag-chip[data-tag="NAME"]    a chip (a button: click filters by tag:NAME), in a row's
 *                                 .tags and in #message-tags
 *   #message-tags                 the open message's tags, after #message-meta; each chip has
 *                                 a .tag-remove button (aria-label "Remove tag NAME")
 *   #tag-form, #tag-input         add a tag to the open message (Enter or #btn-tag-add)
 */
import { $, el } from './dom.js';
import { api, getJSON } from './api.js';
import { fail } from './notice.js';
import { navigate } from './router.js';

let current = null; // the message whose tags are on show

/** The search that finds a tag: tag:NAME, quoted when it holds a space. */
export const tagQuery = (tag) => (/\s/.test(tag) ? `tag:"${tag}"` : `tag:${tag}`);

function filterBy(tag) {
  navigate({ search: tagQuery(tag), start: 0, id: null }, true);
}

function chip(tag) {
  const button = el('button', { type: 'button', class: 'tag-chip', 'data-tag': tag, title: `Show messages tagged ${tag}`, text: tag });
  button.addEventListener('click', (e) => {
    e.stopPropagation(); // not the row's click, which opens the message
    filterBy(tag);
  });
  return button;
}

/** A row's chips (an empty span when it has none). */
export function tagChips(tags) {
  return el('span', { class: 'tags' }, ...(tags || []).map(chip));
}

/** Show the open message's tags with remove buttons and the add form. */
export function renderMessageTags(message) {
  current = message;
  let box = $('#message-tags');
  if (!box) {
    box = el('div', { id: 'message-tags', class: 'tags', role: 'group', 'aria-label': 'Tags' });
    $('#message-meta').after(box);
  }
  const tags = message.Tags || [];
  const chips = tags.map((tag) => {
    const remove = el('button', { type: 'button', class: 'tag-remove', 'aria-label': `Remove tag ${tag}`, title: 'Remove tag', text: '×' });
    remove.addEventListener('click', () => saveTags(message, tags.filter((t) => t !== tag)));
    return el('span', { class: 'tag-item' }, chip(tag), remove);
  });
  const input = el('input', { id: 'tag-input', type: 'text', placeholder: 'Add tag', 'aria-label': 'New tag', maxlength: '100' });
  const form = el('form', { id: 'tag-form', autocomplete: 'off' }, input,
    el('button', { type: 'submit', id: 'btn-tag-add', text: 'Add' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const tag = input.value.trim();
    if (tag && !tags.some((t) => t.toLowerCase() === tag.toLowerCase())) saveTags(message, [...tags, tag]);
    else input.value = '';
  });
  box.replaceChildren(...chips, form);
}

/** A message's summary changed (the live "update" event): follow its tags if it is open. */
export function followUpdate(summary) {
  if (!current || !summary || summary.ID !== current.ID) return;
  const tags = summary.Tags || [];
  if (JSON.stringify(tags) === JSON.stringify(current.Tags || [])) return;
  current.Tags = tags;
  renderMessageTags(current);
}

/** Give the message exactly these tags, then show what the server kept. */
async function saveTags(message, tags) {
  try {
    await api('PUT', '/api/v1/tags', { IDs: [message.ID], Tags: tags });
    const { Tags } = await getJSON(`/api/v1/message/${encodeURIComponent(message.ID)}`);
    message.Tags = Tags || [];
  } catch (err) {
    fail(err);
    return;
  }
  if (current === message) renderMessageTags(message);
}
