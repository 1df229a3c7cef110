/*
 * The Checks tab: what mail servers and clients will make of the open message, so a
 * developer hears it from the sink before production tells them. In order: lint
 * (mailsink's own; errors, then warnings, then info), the HTML check (caniemail.com's
 * support data, as Mailpit scores it), the link check (only on a click, since it sends a
 * request to every link) and the SpamAssassin score (only when /api/v1/webui says
 * SpamAssassin is configured). Each section asks its own route; one that answers 404 (not on
 * this server) or 400 (nothing to check, e.g. a message without HTML) says so in its
 * section, and a failing check never hides the others.
 *
 * Hooks for end-to-end tests:
 *   #tab-checks, #panel-checks
 *   #lint-summary             "2 errors, 1 warning" or "No findings: ..."
 *   #lint-findings            li.finding.sev-error|sev-warning|sev-info, each with .severity,
 *                             .field, .sentence, .reference and .code
 *   #htmlcheck-summary        "87.5% supported ..." or why there is no score; #htmlcheck-score
 *                             (meter, 0-100); #htmlcheck-warnings: li.html-warning per feature,
 *                             a closed <details> whose summary is .feature-title, with li.family
 *                             per client family that lacks the feature
 *   #btn-link-check, #link-follow (checkbox: follow redirects), #linkcheck-summary,
 *   #linkcheck-table tbody    tr.link (class "bad" for no answer, 4xx, 5xx) with .status-code,
 *                             .status, .url
 *   #check-spam               hidden unless SpamAssassin is configured; #spam-summary,
 *                             #spam-rules tbody tr with .rule-score, .rule-name, .rule-description
 */
import { $, el, enc } from './dom.js';
import { getJSON, request } from './api.js';

const SEVERITIES = ['error', 'warning', 'info'];
const SUPPORT_WORDS = { no: 'not supported', partial: 'partly supported' };

let webui = null; // the /api/v1/webui answer, asked once per page
let current = null; // { m, stillShown } of the message whose checks are on show

const plural = (n, one) => `${n} ${one}${n === 1 ? '' : 's'}`;
const percent = (value) => `${Math.round((Number(value) || 0) * 10) / 10}%`;
const isHttp = (url) => /^https?:\/\//i.test(url || '');
/** The text of an HTML fragment of the support data (its notes hold <code> and links); parsed
 * in an inert document of its own, never put into the page as HTML. */
const textOf = (html) => new DOMParser().parseFromString(String(html), 'text/html').body.textContent;

/**
 * GET a check: {data} on success, else {status, text} with the server's sentence when it
 * sent one as text (a route this server lacks answers 404 without one).
 */
async function getCheck(path) {
  const res = await request('GET', path);
  if (res.ok) return { data: await res.json() };
  const plain = (res.headers.get('Content-Type') || '').startsWith('text/plain');
  const text = plain ? (await res.text()).trim().slice(0, 300) : '';
  return { status: res.status, text };
}

/** The sentence for a check the server did not give. */
function unavailable(what, answer) {
  if (answer.text) return `No ${what}: ${answer.text.replace(/[.\s]+$/, '')}.`;
  if (answer.status === 404) return `No ${what}: this server does not offer it (404).`;
  return `No ${what}: the server answered ${answer.status}.`;
}

/** Run one section's check; a failure is said in that section only, while its message is open. */
async function guarded(stillShown, summary, work) {
  try {
    await work();
  } catch (err) {
    if (stillShown()) $(summary).textContent = `The check failed: ${err && err.message ? err.message : err}`;
  }
}

/** Show the checks of message m (the Checks tab's lazy loader; stillShown() says if m is open). */
export async function loadChecks(m, stillShown) {
  current = { m, stillShown };
  $('#lint-findings').replaceChildren();
  $('#htmlcheck-warnings').replaceChildren();
  $('#htmlcheck-score').hidden = true;
  $('#linkcheck-table').hidden = true;
  $('#linkcheck-table tbody').replaceChildren();
  $('#linkcheck-summary').textContent = 'Asks each http(s) link and image of the message for its status.';
  $('#btn-link-check').disabled = false;
  $('#check-spam').hidden = true;
  $('#spam-rules').hidden = true;
  $('#spam-rules tbody').replaceChildren();
  $('#spam-summary').classList.remove('is-spam');
  for (const id of ['#lint-summary', '#htmlcheck-summary', '#spam-summary']) $(id).textContent = 'Checking…';
  const path = (check) => `/api/v1/message/${enc(m.ID)}/${check}`;
  await Promise.all([
    guarded(stillShown, '#lint-summary', async () => {
      const answer = await getCheck(path('lint'));
      if (stillShown()) renderLint(answer);
    }),
    guarded(stillShown, '#htmlcheck-summary', async () => {
      const answer = await getCheck(path('html-check'));
      if (stillShown()) renderHtmlCheck(answer);
    }),
    guarded(stillShown, '#spam-summary', async () => {
      if (!(await spamAssassinConfigured()) || !stillShown()) return;
      $('#check-spam').hidden = false;
      const answer = await getCheck(path('sa-check'));
      if (stillShown()) renderSpam(answer);
    }),
  ]);
}

async function spamAssassinConfigured() {
  webui ??= getJSON('/api/v1/webui').catch(() => ({}));
  return Boolean((await webui).SpamAssassin);
}

/** Lint: errors, then warnings, then info, each with its field, sentence and reference. */
function renderLint(answer) {
  if (!answer.data) {
    $('#lint-summary').textContent = unavailable('lint', answer);
    return;
  }
  const rank = (f) => { const i = SEVERITIES.indexOf(f.Severity); return i < 0 ? SEVERITIES.length : i; };
  const findings = [...(answer.data.Findings || [])].sort((a, b) => rank(a) - rank(b));
  const infos = findings.filter((f) => f.Severity === 'info').length;
  const counts = [plural(answer.data.Errors || 0, 'error'), plural(answer.data.Warnings || 0, 'warning')];
  if (infos) counts.push(`${infos} info`);
  $('#lint-summary').textContent = findings.length
    ? counts.join(', ')
    : 'No findings: real servers should accept this message unchanged.';
  $('#lint-findings').replaceChildren(...findings.map((f) => {
    const severity = SEVERITIES.includes(f.Severity) ? f.Severity : 'info';
    return el('li', { class: `finding sev-${severity}` },
      el('span', { class: 'severity', text: f.Severity || 'info' }),
      el('span', { class: 'field', text: f.Field || '' }),
      el('p', { class: 'sentence', text: f.Message || '' }),
      el('p', { class: 'reference muted' },
        f.Reference ? `${f.Reference} · ` : '', el('code', { class: 'code', text: f.Code || '' })));
  }));
}

/** The HTML check: the overall score, then each feature some client families lack. */
function renderHtmlCheck(answer) {
  if (!answer.data) {
    $('#htmlcheck-summary').textContent = unavailable('HTML check', answer);
    return;
  }
  const total = answer.data.Total || {};
  const warnings = answer.data.Warnings || [];
  $('#htmlcheck-summary').textContent =
    `${percent(total.Supported)} supported, ${percent(total.Partial)} partly, ${percent(total.Unsupported)} not`
    + ` (${plural(total.Tests || 0, 'test')} on ${plural(total.Nodes || 0, 'HTML element')};`
    + ` ${warnings.length ? plural(warnings.length, 'feature') + ' with limited support' : 'every feature used is supported'}).`;
  const meter = $('#htmlcheck-score');
  meter.value = Number(total.Supported) || 0;
  meter.textContent = percent(total.Supported);
  meter.hidden = false;
  $('#htmlcheck-warnings').replaceChildren(...warnings.map(htmlWarning));
}

/** A feature some clients lack: its score in the summary line; families and notes when opened. */
function htmlWarning(w) {
  const score = w.Score || {};
  const found = Number(score.Found) || 0;
  const lacking = (w.Results || []).filter((r) => r.Support === 'no' || r.Support === 'partial');
  const cited = new Set(lacking.map((r) => String(r.NoteNumber || '')));
  const notes = Object.entries(w.NotesByNumber || {}).filter(([n]) => cited.has(n));
  return el('li', { class: 'html-warning' }, el('details', {},
    el('summary', { class: 'feature-title' },
      el('span', { text: w.Title || w.Slug || '' }),
      el('span', { class: 'muted', text: ` ${w.Category || ''}${found ? ` · used ${plural(found, 'time')}` : ''}`
        + ` · ${percent(score.Supported)} supported, ${percent(score.Partial)} partly, ${percent(score.Unsupported)} not` })),
    w.Description ? el('p', { class: 'muted', text: w.Description }) : '',
    lacking.length ? el('ul', { class: 'families' }, ...familiesLacking(lacking)) : '',
    notes.length ? el('ul', { class: 'notes muted' }, ...notes.map(([n, note]) => el('li', { text: `Note ${n}: ${textOf(note)}` }))) : '',
    isHttp(w.URL) ? el('p', {}, el('a', { href: w.URL, target: '_blank', rel: 'noopener noreferrer', text: 'Details on caniemail.com' })) : ''));
}

/** One li per client family with its platforms (and versions) that do not or partly support a feature. */
function familiesLacking(lacking) {
  const byFamily = new Map();
  for (const r of lacking) {
    if (!byFamily.has(r.Family)) byFamily.set(r.Family, { no: [], partial: [] });
    const where = [r.Platform, r.Version].filter(Boolean).join(' ') || r.Name || '';
    byFamily.get(r.Family)[r.Support].push(r.NoteNumber ? `${where} [note ${r.NoteNumber}]` : where);
  }
  return [...byFamily].map(([family, support]) => el('li', { class: 'family' },
    el('strong', { text: family || '(unnamed client)' }),
    ...['no', 'partial'].filter((s) => support[s].length).map((s) =>
      el('span', { class: `support-${s}`, text: ` ${SUPPORT_WORDS[s]}: ${support[s].join(', ')}` }))));
}

/** The link check, on a click: each link with its status, broken ones marked. */
async function runLinkCheck() {
  if (!current) return;
  const { m, stillShown } = current;
  const button = $('#btn-link-check');
  button.disabled = true;
  $('#linkcheck-table').hidden = true;
  $('#linkcheck-summary').textContent = 'Checking links… (each may take up to 10 s)';
  const follow = $('#link-follow').checked ? '?follow=true' : '';
  await guarded(stillShown, '#linkcheck-summary', async () => {
    const answer = await getCheck(`/api/v1/message/${enc(m.ID)}/link-check${follow}`);
    if (stillShown()) renderLinks(answer);
  });
  if (stillShown()) button.disabled = false;
}

function renderLinks(answer) {
  if (!answer.data) {
    $('#linkcheck-summary').textContent = unavailable('link check', answer);
    return;
  }
  const links = answer.data.Links || [];
  $('#linkcheck-summary').textContent = links.length
    ? `${plural(links.length, 'link')}, ${answer.data.Errors || 0} broken.`
    : 'The message has no http(s) links or images.';
  $('#linkcheck-table tbody').replaceChildren(...links.map((link) => {
    const bad = !(link.StatusCode >= 100 && link.StatusCode < 400);
    return el('tr', { class: bad ? 'link bad' : 'link' },
      el('td', { class: 'status-code' },
        bad ? el('span', { class: 'sr-only', text: 'Broken: ' }) : '',
        bad ? el('span', { 'aria-hidden': 'true', text: '✗ ' }) : '',
        String(link.StatusCode || '—')),
      el('td', { class: 'status', text: link.Status || '' }),
      el('td', { class: 'url' }, isHttp(link.URL)
        ? el('a', { href: link.URL, target: '_blank', rel: 'noopener noreferrer', text: link.URL })
        : link.URL || ''));
  }));
  $('#linkcheck-table').hidden = links.length === 0;
}

/** SpamAssassin's verdict and the rules that scored, highest first. */
function renderSpam(answer) {
  if (!answer.data) {
    $('#spam-summary').textContent = unavailable('spam check', answer);
    return;
  }
  const r = answer.data;
  if (r.Error) {
    $('#spam-summary').textContent = `The spam check failed: ${r.Error}`;
    return;
  }
  const rules = [...(r.Rules || [])].sort((a, b) => (Number(b.Score) || 0) - (Number(a.Score) || 0));
  $('#spam-summary').textContent = `Score ${Number(r.Score) || 0}: ${r.IsSpam ? 'SpamAssassin calls it spam' : 'not spam'}`
    + ` (${plural(rules.length, 'rule')} matched).`;
  $('#spam-summary').classList.toggle('is-spam', Boolean(r.IsSpam));
  $('#spam-rules tbody').replaceChildren(...rules.map((rule) => el('tr', {},
    el('td', { class: 'rule-score', text: String(rule.Score ?? '') }),
    el('td', { class: 'rule-name', text: rule.Name || '' }),
    el('td', { class: 'rule-description', text: rule.Description || '' }))));
  $('#spam-rules').hidden = rules.length === 0;
}

/** Wire the link check's button. */
export function initChecks() {
  $('#btn-link-check').addEventListener('click', runLinkCheck);
}
