/*
 * Relay buttons, only shown when /api/v1/webui says MessageRelay.Enabled.
 *
 * Hooks for end-to-end tests:
 *   #btn-relay-test           list toolbar; POSTs /api/v1/relay/test, shows its message
 *                             in #notice (class "ok" when status is "ok")
 *   #btn-release              message toolbar; opens #release-form (hidden until then) with
 *                             #release-to prefilled with the message's To addresses,
 *                             comma-separated; #btn-release-confirm (submit) releases,
 *                             #btn-release-cancel closes it. Success: "Released to a, b."
 *                             in #notice (class "ok"); a 400 shows the server's reason.
 */
import { $, enc } from './dom.js';
import { api, getJSON, request } from './api.js';
import { fail, showNotice } from './notice.js';

let enabled = false;

/** Ask the server whether a relay is configured, and show or hide the buttons. */
export async function loadWebUI() {
  let info;
  try {
    info = await getJSON('/api/v1/webui');
  } catch (err) { return; } // no relay buttons; a 401 already said so
  enabled = Boolean(info && info.MessageRelay && info.MessageRelay.Enabled);
  $('#btn-relay-test').hidden = !enabled;
  $('#btn-release').hidden = !enabled;
  if (!enabled) hideReleaseForm();
}

async function relayTest() {
  const button = $('#btn-relay-test');
  button.disabled = true;
  try {
    const answer = await (await api('POST', '/api/v1/relay/test', {})).json();
    const ok = answer && answer.status === 'ok';
    showNotice(String((answer && answer.message) || (ok ? 'SMTP connection successful' : 'relay test failed')), !ok, ok);
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

/** Close the release form (another message opened, or relay turned out to be off). */
export function hideReleaseForm() {
  $('#release-form').hidden = true;
  $('#release-status').textContent = '';
}

function showReleaseForm(m) {
  if (!m || !enabled) return;
  const to = (m.To || []).map((a) => (a && a.Address) || '').filter(Boolean).join(', ');
  $('#release-to').value = to;
  $('#release-status').textContent = '';
  $('#release-form').hidden = false;
  $('#release-to').focus();
}

async function releaseMessage(e, m) {
  e.preventDefault();
  const id = m && m.ID;
  if (!id) return;
  const to = $('#release-to').value.split(/[,;\s]+/).map((a) => a.trim()).filter(Boolean);
  if (!to.length) {
    $('#release-status').textContent = 'Enter at least one address.';
    return;
  }
  const submit = $('#btn-release-confirm');
  submit.disabled = true;
  $('#release-status').textContent = 'Releasing…';
  try {
    const res = await request('POST', `/api/v1/message/${enc(id)}/release`, { To: to });
    if (!res.ok) { // the server's one-sentence reason, as it sent it
      const text = (await res.text().catch(() => '')).trim().slice(0, 500);
      showNotice(text || `Release failed: HTTP ${res.status}`, true);
      return;
    }
    hideReleaseForm();
    showNotice(`Released to ${to.join(', ')}.`, false, true);
  } catch (err) {
    fail(err);
  } finally {
    submit.disabled = false;
    if (!$('#release-form').hidden) $('#release-status').textContent = '';
  }
}

/** Wire the relay buttons; shownMessage() is the message on show (or null). */
export function initRelay(shownMessage) {
  $('#btn-relay-test').addEventListener('click', relayTest);
  $('#btn-release').addEventListener('click', () => showReleaseForm(shownMessage()));
  $('#release-form').addEventListener('submit', (e) => releaseMessage(e, shownMessage()));
  $('#btn-release-cancel').addEventListener('click', hideReleaseForm);
}
