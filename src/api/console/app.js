// Weiche administration page: a thin client of the gateway's admin endpoints.
// Every value from the server is put into the page with textContent, never as markup.
'use strict';

const TOKEN_KEY = 'weiche-admin-token';
const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** Calls the API; resolves to {status, body} with body parsed as JSON when it is JSON. */
async function api(method, path, body, contentType) {
  const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
  if (contentType) headers['Content-Type'] = contentType;
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    return { status: 0, body: { code: 'network', message: 'the gateway did not answer' } };
  }
  const type = res.headers.get('content-type') || '';
  const parsed = type.startsWith('application/json') ? await res.json().catch(() => null) : null;
  return { status: res.status, body: parsed };
}

/** An element with text children (strings become text nodes, never markup). */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    if (c instanceof Node) {
      const td = document.createElement('td');
      td.append(c);
      tr.append(td);
    } else {
      tr.append(el('td', c === null || c === undefined ? '' : c));
    }
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

function say(id, text, kind) {
  const node = $(id);
  node.textContent = text;
  node.className = 'status' + (kind ? ' ' + kind : '');
}

/** A failed answer as one line: status, code and message of the error body. */
function failure(res) {
  if (res.status === 401) return 'not signed in: the token is not valid (401)';
  if (res.status === 403) return 'this token is not an administrator\'s (403)';
  const b = res.body || {};
  return `failed (${res.status || 'no answer'}): ${b.code || ''} ${b.message || ''}`.trim();
}

function short(hash) {
  return typeof hash === 'string' && hash.length > 12 ? hash.slice(0, 12) + '…' : hash;
}

// --- sign in ------------------------------------------------------------------------------

async function signIn(event) {
  if (event) event.preventDefault();
  const typed = $('token').value.trim();
  if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
  $('token').value = '';
  if (!token()) return;
  const res = await api('GET', '/api/v1/admin/mappings');
  if (res.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    say('who', failure(res), 'error');
    $('console').hidden = true;
    return;
  }
  say('who', 'signed in', 'ok');
  $('signout').hidden = false;
  $('console').hidden = false;
  showMappings(res.body);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  $('console').hidden = true;
  $('signout').hidden = true;
  say('who', 'signed out');
}

// --- mappings and preview -----------------------------------------------------------------

let syntaxOf = {};

function showMappings(body) {
  $('mappings-dir').textContent = body.directory
    ? 'directory: ' + body.directory
    : 'built-in mappings (no mappings directory configured)';
  syntaxOf = {};
  const select = $('preview-format');
  const chosen = select.value;
  select.replaceChildren();
  fill('mappings-table', (body.mappings || []).map((m) => {
    syntaxOf[m.format] = m.syntax;
    const option = el('option', m.format);
    option.value = m.format;
    select.append(option);
    const version = el('span', short(m.version), 'mono');
    version.title = m.version || '';
    return row([m.format, m.syntax, m.description, (m.vendors || []).join(', '), version, m.file]);
  }));
  if (chosen) select.value = chosen;
  const failures = body.failures || [];
  fill('failures-table', failures.length
    ? failures.map((f) => row([f.file, f.line, f.error]))
    : [row(['none', '', ''])]);
}

async function loadMappings() {
  const res = await api('GET', '/api/v1/admin/mappings');
  if (res.status === 200) showMappings(res.body);
  else $('mappings-dir').textContent = failure(res);
}

const CONTENT_TYPES = { json: 'application/json', xml: 'application/xml', csv: 'text/csv; charset=utf-8' };

async function runPreview(event) {
  event.preventDefault();
  const format = $('preview-format').value;
  const file = $('preview-file').files[0];
  const text = $('preview-text').value;
  if (!file && !text) {
    say('preview-status', 'choose a sample file or paste a sample', 'error');
    return;
  }
  const params = new URLSearchParams();
  if ($('preview-vendor').value.trim()) params.set('vendor', $('preview-vendor').value.trim());
  if ($('preview-mode').value) params.set('mode', $('preview-mode').value);
  const query = params.toString() ? '?' + params : '';
  // A file is sent as its bytes (its own encoding); pasted text as UTF-8.
  const type = file ? CONTENT_TYPES[syntaxOf[format]].replace('; charset=utf-8', '') : CONTENT_TYPES[syntaxOf[format]];
  say('preview-status', 'running…');
  const res = await api('POST', `/api/v1/admin/mappings/${encodeURIComponent(format)}/preview${query}`,
    file || text, type);
  const out = $('preview-out');
  out.replaceChildren();
  if (res.status !== 200) {
    say('preview-status', failure(res), 'error');
    if (res.body) out.append(el('pre', JSON.stringify(res.body, null, 2)));
    return;
  }
  const r = res.body.receipt || {};
  const routed = Object.entries(r.routed || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  say('preview-status',
    `status ${r.status}: ${r.received} received, ${r.accepted} accepted, ${r.rejected} rejected; routed: ${routed}`,
    r.status === 'E1' || r.status === 'E2' ? 'ok' : 'error');
  out.append(el('h3', 'Receipt'), el('pre', JSON.stringify(r, null, 2)));
  out.append(el('h3', 'Canonical records'), el('pre', JSON.stringify(res.body.records, null, 2)));
  for (const [recipient, items] of Object.entries(res.body.views || {})) {
    out.append(el('h3', `What ${recipient} would get`), el('pre', JSON.stringify(items, null, 2)));
  }
}

// --- dead letters -------------------------------------------------------------------------

async function listDead(event) {
  if (event) event.preventDefault();
  const recipient = $('dead-recipient').value.trim();
  const query = recipient ? '?recipient=' + encodeURIComponent(recipient) : '';
  const res = await api('GET', '/api/v1/admin/dead-letters' + query);
  if (res.status !== 200) {
    say('dead-status', failure(res), 'error');
    return;
  }
  const groups = res.body.dead_letters || [];
  say('dead-status', groups.length ? `${groups.length} dead letter(s)` : 'no dead letters', 'ok');
  fill('dead-table', groups.map((g) => {
    const actions = document.createElement('span');
    const replay = el('button', 'Replay');
    replay.type = 'button';
    replay.addEventListener('click', () => settle(g.id, 'replay'));
    const discard = el('button', 'Discard', 'secondary');
    discard.type = 'button';
    discard.addEventListener('click', () => settle(g.id, 'discard'));
    actions.append(replay, ' ', discard);
    return row([el('span', g.id, 'mono'), g.recipient, g.items, g.attempts, g.last_error, g.updated_at, actions]);
  }));
}

async function settle(id, action) {
  const question = action === 'replay'
    ? `Send group ${id} again, next in its recipient's line?`
    : `Give group ${id} up for good? Its items will not be delivered.`;
  if (!window.confirm(question)) return;
  const res = await api('POST', `/api/v1/admin/dead-letters/${encodeURIComponent(id)}/${action}`);
  if (res.status !== 200) {
    say('dead-status', failure(res), 'error');
    return;
  }
  await listDead();
  say('dead-status', `group ${id}: ${res.body.state}`, 'ok');
}

// --- audit chain --------------------------------------------------------------------------

async function verifyAudit() {
  say('audit-status', 'checking…');
  const res = await api('GET', '/api/v1/admin/audit/verify');
  const out = $('audit-out');
  out.replaceChildren();
  if (res.status !== 200) {
    say('audit-status', failure(res), 'error');
    return;
  }
  const v = res.body;
  say('audit-status', v.intact ? 'the chain is intact' : 'the chain is BROKEN', v.intact ? 'ok' : 'error');
  const add = (term, value) => out.append(el('dt', term), el('dd', value === null || value === undefined ? '—' : value));
  add('events', v.events);
  add('last hash', v.last_hash);
  add('first broken', v.first_broken ? `seq ${v.first_broken.seq}: ${v.first_broken.reason}` : null);
  add('anchor', v.anchor ? `seq ${v.anchor.seq}, hash ${v.anchor.hash}` : null);
}

// --- data-subject requests ----------------------------------------------------------------

function subject() {
  return { vendor: $('subject-vendor').value.trim(), client: $('subject-client').value.trim() };
}

async function disclosure(event) {
  event.preventDefault();
  const { vendor, client } = subject();
  const query = new URLSearchParams({ vendor, client_id: client });
  const res = await api('GET', '/api/v1/admin/disclosures?' + query);
  if (res.status !== 200) {
    say('subject-status', failure(res), 'error');
    return;
  }
  const events = res.body.events || [];
  say('subject-status', `${events.length} event(s) about this client`, 'ok');
  fill('subject-table', events.map((e) => {
    const fields = el('details');
    fields.append(el('summary', `${(e.fields || []).length} field(s)`));
    fields.append(el('pre', (e.fields || []).map((f) => `${f.path}: ${f.action}`).join('\n')));
    return row([e.at, e.kind, e.recipient, e.legal_basis, e.consent_id, e.reporting_period,
      el('span', short(e.record_ref), 'mono'), fields, e.note]);
  }));
}

async function erase() {
  const { vendor, client } = subject();
  if (!vendor || !client) {
    say('subject-status', 'name the vendor and the client id first', 'error');
    return;
  }
  const typed = window.prompt(
    `Erase client ${client} of ${vendor}? Its records are deleted and every recipient holding them is told. ` +
    'This cannot be undone. Type the client id again to confirm:');
  if (typed === null) return;
  if (typed.trim() !== client) {
    say('subject-status', 'not erased: the client id typed did not match', 'error');
    return;
  }
  const res = await api('DELETE',
    `/api/v1/admin/clients/${encodeURIComponent(vendor)}/${encodeURIComponent(client)}`);
  if (res.status !== 200) {
    say('subject-status', failure(res), 'error');
    return;
  }
  const b = res.body;
  const e = b.erased || {};
  say('subject-status', b.found === false
    ? `erasure ${b.erasure_id}: nothing of this client was found (the erasure is recorded in the audit trail)`
    : `erasure ${b.erasure_id}: ${e.records} record(s), ${e.items} item(s), ${e.lifecycle_items} lifecycle item(s), ` +
      `${e.receipt_entries} receipt entr(ies) in ${e.receipts} receipt(s), ${e.withdrawals} withdrawal(s), ` +
      `${e.feedback} feedback entr(ies) erased; ${b.notified} notice(s) to recipients`, 'ok');
  fill('subject-table', []);
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('mappings-load').addEventListener('click', loadMappings);
  $('preview-form').addEventListener('submit', runPreview);
  $('dead-form').addEventListener('submit', listDead);
  $('audit-verify').addEventListener('click', verifyAudit);
  $('subject-form').addEventListener('submit', disclosure);
  $('subject-erase').addEventListener('click', erase);
  if (token()) signIn();
});
