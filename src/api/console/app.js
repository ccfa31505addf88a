// Weiche administration page: a thin client of the gateway's admin endpoints (admin-console.md).
// Every value from the server is put into the page with textContent or as an SVG attribute,
// never as markup. The texts are in i18n.js, one block per language.
'use strict';

const TOKEN_KEY = 'weiche-admin-token';
const LANG_KEY = 'weiche-admin-lang';
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

// --- language -----------------------------------------------------------------------------

let lang = localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'de';

/** A text of the current language, with `{name}` replaced by vars[name]. */
function t(key, vars) {
  const texts = WEICHE_TEXTS[lang] || WEICHE_TEXTS.de;
  const text = texts[key] !== undefined ? texts[key] : (WEICHE_TEXTS.de[key] || key);
  return text.replace(/\{(\w+)\}/g, (_, name) =>
    (vars && vars[name] !== undefined && vars[name] !== null ? String(vars[name]) : ''));
}

function applyTexts() {
  document.documentElement.lang = lang;
  document.title = t('title');
  for (const node of document.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
  $('lang').value = lang;
}

const LOCALE = () => (lang === 'de' ? 'de-DE' : 'en-GB');

/** An RFC 3339 time as local date and time in Europe/Berlin. */
function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return new Intl.DateTimeFormat(LOCALE(), {
    timeZone: 'Europe/Berlin', dateStyle: 'short', timeStyle: 'medium',
  }).format(d);
}

function num(n) {
  return typeof n === 'number' ? n.toLocaleString(LOCALE()) : (n === null || n === undefined ? '' : String(n));
}

// --- calls --------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** Calls the API; resolves to {status, body, headers} with body parsed when it is JSON. */
async function api(method, path, body, contentType, extraHeaders) {
  const headers = Object.assign({ Authorization: 'Bearer ' + token(), Accept: 'application/json' }, extraHeaders || {});
  if (contentType) headers['Content-Type'] = contentType;
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    return { status: 0, body: { code: 'network', message: 'no answer' }, headers: new Headers() };
  }
  const type = res.headers.get('content-type') || '';
  const parsed = type.startsWith('application/json') ? await res.json().catch(() => null) : null;
  return { status: res.status, body: parsed, headers: res.headers };
}

function failure(res) {
  if (res.status === 401) return t('signin.bad');
  if (res.status === 403) return t('signin.notadmin');
  const b = res.body || {};
  return t('common.failed', { status: res.status || '–', code: b.code || '', message: b.message || '' }).trim();
}

// --- building the page (text only) --------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(text, onClick, className) {
  const b = el('button', text, className);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

function mono(text, full) {
  const s = el('span', text, 'mono');
  if (full) s.title = full;
  return s;
}

function row(cells, className) {
  const tr = document.createElement('tr');
  if (className) tr.className = className;
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.append(c);
    else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.append(td);
  }
  return tr;
}

function fill(tableId, rows) {
  $(tableId).tBodies[0].replaceChildren(...rows);
}

function say(id, text, kind) {
  const node = $(id);
  node.textContent = text || '';
  node.className = 'status' + (kind ? ' ' + kind : '');
}

function short(hash) {
  return typeof hash === 'string' && hash.length > 12 ? hash.slice(0, 12) + '…' : hash;
}

function dl(target, pairs) {
  const node = $(target);
  node.replaceChildren();
  for (const [term, value] of pairs) {
    node.append(el('dt', term));
    const dd = el('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
    node.append(dd);
  }
}

function badge(status) {
  return el('span', status, 'badge s-' + status);
}

function json(v) {
  return JSON.stringify(v, null, 2);
}

/** A date input (YYYY-MM-DD) as the RFC 3339 start of that day in UTC, or ''. */
function dayStart(value, plusDays) {
  if (!value) return '';
  const d = new Date(value + 'T00:00:00Z');
  d.setUTCDate(d.getUTCDate() + (plusDays || 0));
  return d.toISOString();
}

// --- sign in and views --------------------------------------------------------------------

let admin = null;

async function signIn(event) {
  if (event) event.preventDefault();
  const typed = $('token').value.trim();
  if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
  $('token').value = '';
  if (!token()) return;
  const res = await api('GET', '/api/v1/admin/me');
  if (res.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    say('who', failure(res), 'error');
    $('console').hidden = true;
    return;
  }
  admin = res.body.id;
  document.body.classList.add('signed-in');
  say('who', t('signin.as', { id: admin }), 'ok');
  $('signout').hidden = false;
  $('console').hidden = false;
  show();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  admin = null;
  document.body.classList.remove('signed-in');
  $('console').hidden = true;
  $('signout').hidden = true;
  say('who', t('signin.outdone'));
}

const VIEWS = ['overview', 'deliveries', 'recipients', 'mappings', 'subject', 'audit'];

function currentView() {
  const name = location.hash.replace('#', '');
  return VIEWS.includes(name) ? name : 'overview';
}

/** Shows the view the address names and loads its data. */
function show() {
  if (!admin) return;
  const name = currentView();
  for (const v of VIEWS) $('view-' + v).hidden = v !== name;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  window.scrollTo(0, 0);
  if (name === 'overview') loadStats();
  if (name === 'deliveries') loadDeliveries();
  if (name === 'recipients') loadRecipients();
  if (name === 'mappings') loadMappings();
  if (name === 'audit') loadEvents();
}

// --- overview -----------------------------------------------------------------------------

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** Stacked bars per bucket, one colour per status. */
function seriesChart(series, windowName) {
  const W = Math.max(320, Math.min(1200, $('chart-series').clientWidth || 720));
  const H = 220;
  const pad = { l: 40, r: 10, t: 10, b: 30 };
  const statuses = ['E1', 'E2', 'E3', 'E4'];
  const totals = series.map((b) => statuses.reduce((s, k) => s + (b[k] || 0), 0));
  const max = Math.max(1, ...totals);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('overview.series') });
  const bw = (W - pad.l - pad.r) / Math.max(1, series.length);
  root.append(svg('line', { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: 'axis' }));
  root.append(svg('text', { x: pad.l - 6, y: pad.t + 10, class: 'tick', 'text-anchor': 'end' }, num(max)));
  root.append(svg('text', { x: pad.l - 6, y: H - pad.b, class: 'tick', 'text-anchor': 'end' }, '0'));
  series.forEach((b, i) => {
    let y = H - pad.b;
    for (const s of statuses) {
      const n = b[s] || 0;
      if (!n) continue;
      const h = (n / max) * (H - pad.t - pad.b);
      y -= h;
      const rect = svg('rect', { x: pad.l + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, class: 'bar s-' + s });
      rect.append(svg('title', {}, `${when(b.start)} · ${s}: ${num(n)}`));
      root.append(rect);
    }
    const every = windowName === '24h' ? 6 : 7;
    if (i % every === 0) {
      const d = new Date(b.start);
      const label = windowName === '24h'
        ? new Intl.DateTimeFormat(LOCALE(), { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(d)
        : new Intl.DateTimeFormat(LOCALE(), { timeZone: 'Europe/Berlin', day: '2-digit', month: '2-digit' }).format(d);
      root.append(svg('text', { x: pad.l + i * bw, y: H - pad.b + 16, class: 'tick' }, label));
    }
  });
  const legend = el('p', null, 'legend');
  for (const s of statuses) {
    legend.append(el('span', '', 'swatch s-' + s), el('span', s + ' '));
  }
  return [root, legend];
}

/** Horizontal bars with labels: [{key, count}]. */
function barsChart(entries, label, box) {
  const W = Math.max(260, Math.min(700, $(box).clientWidth || 360));
  const rowH = 22;
  const H = Math.max(rowH, entries.length * rowH);
  const max = Math.max(1, ...entries.map((e) => e.count));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
  entries.forEach((e, i) => {
    const w = (e.count / max) * (W - 160);
    root.append(svg('text', { x: 0, y: i * rowH + 15, class: 'tick' }, e.key));
    const rect = svg('rect', { x: 110, y: i * rowH + 4, width: Math.max(1, w), height: rowH - 8, class: 'bar hbar' });
    rect.append(svg('title', {}, `${e.key}: ${num(e.count)}`));
    root.append(rect);
    root.append(svg('text', { x: 116 + w, y: i * rowH + 15, class: 'tick' }, num(e.count)));
  });
  return root;
}

async function loadStats(event) {
  if (event) event.preventDefault();
  const windowName = $('stats-window').value || '24h';
  const [res, vendors] = await Promise.all([
    api('GET', `/api/v1/admin/stats?window=${windowName}&by=code`),
    api('GET', `/api/v1/admin/stats?window=${windowName}&by=vendor`),
  ]);
  if (res.status !== 200) {
    say('stats-status', failure(res), 'error');
    return;
  }
  const s = res.body;
  say('stats-status', s.truncated ? t('overview.truncated') : '');
  $('kpi-deliveries').textContent = num(s.deliveries);
  $('kpi-received').textContent = num(s.records.received);
  $('kpi-accepted').textContent = num(s.records.accepted);
  $('kpi-rejected').textContent = num(s.records.rejected);
  $('chart-series').replaceChildren(...seriesChart(s.series || [], windowName));
  const codes = (s.codes || []).map((c) => ({ key: c.code, count: c.count }));
  $('chart-codes').replaceChildren(codes.length ? barsChart(codes, t('overview.codes'), 'chart-codes') : el('p', t('overview.nocodes'), 'hint'));
  const byVendor = vendors.status === 200 ? vendors.body.groups || [] : [];
  $('chart-vendors').replaceChildren(byVendor.length ? barsChart(byVendor, t('overview.byvendor'), 'chart-vendors') : el('p', t('common.none'), 'hint'));
  fill('overview-recipients', (s.recipients || []).map((r) =>
    row([r.id, r.kind, num(r.waiting), when(r.oldest_waiting_at), when(r.last_batch_at), num(r.dead_letters)])));
}

// --- deliveries ---------------------------------------------------------------------------

let deliveriesCursor = null;

function deliveryQuery() {
  const p = new URLSearchParams();
  const set = (k, v) => { if (v) p.set(k, v); };
  set('vendor', $('f-vendor').value.trim());
  set('format', $('f-format').value.trim());
  set('status', $('f-status').value);
  set('mode', $('f-mode').value);
  set('id', $('f-id').value.trim());
  set('since', dayStart($('f-since').value));
  set('until', dayStart($('f-until').value, 1));
  return p;
}

async function loadDeliveries(event, more) {
  if (event) event.preventDefault();
  const p = deliveryQuery();
  if (more && deliveriesCursor) p.set('cursor', deliveriesCursor);
  const res = await api('GET', '/api/v1/admin/deliveries?' + p);
  if (res.status !== 200) {
    say('deliveries-status', failure(res), 'error');
    return;
  }
  const rows = (res.body.deliveries || []).map((d) => row([
    when(d.received_at), d.vendor, d.format, d.mode, badge(d.status),
    `${num(d.received)} / ${num(d.accepted)} / ${num(d.rejected)}`,
    button(t('common.open'), () => openDelivery(d.delivery_id), 'secondary open-delivery'),
  ], 'delivery'));
  const body = $('deliveries-table').tBodies[0];
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  deliveriesCursor = res.body.next_cursor;
  $('deliveries-more').hidden = !deliveriesCursor;
  say('deliveries-status', t('deliveries.count', { n: body.rows.length }));
}

let entries = [];

async function openDelivery(id) {
  const res = await api('GET', `/api/v1/admin/deliveries/${encodeURIComponent(id)}`);
  if (res.status !== 200) {
    say('deliveries-status', failure(res), 'error');
    return;
  }
  const d = res.body;
  const r = d.receipt || {};
  $('delivery-detail').hidden = false;
  $('record-view').hidden = true;
  $('receipt-title').textContent = t('receipt.title', { id: d.delivery_id });
  const routed = Object.entries(r.routed || {}).map(([k, v]) => `${k}: ${num(v)}`).join(', ');
  dl('receipt-summary', [
    [t('col.vendor'), d.vendor],
    [t('col.received_at'), when(d.received_at)],
    [t('col.status'), badge(r.status)],
    [t('col.format'), `${r.format} (${r.mode})`],
    [t('receipt.counts'), t('receipt.countsvalue', r)],
    [t('receipt.periods'), (r.reporting_periods || []).join(', ')],
    [t('receipt.mapping'), mono(short(r.mapping_version), r.mapping_version)],
    [t('receipt.routed'), routed],
  ]);
  entries = [
    ...(r.errors || []).map((e) => Object.assign({ severity: 'error' }, e)),
    ...(r.warnings || []).map((e) => Object.assign({ severity: 'warning' }, e)),
    ...(r.notes || []).map((e) => Object.assign({ severity: 'note', field: e.recipient }, e)),
  ];
  entries.vendor = d.vendor;
  const codes = [...new Set(entries.map((e) => e.code))].sort();
  const select = $('entries-code');
  const all = el('option', t('deliveries.any'));
  all.value = '';
  select.replaceChildren(all, ...codes.map((c) => el('option', c)));
  showEntries();
  $('delivery-detail').scrollIntoView({ block: 'start' });
}

function showEntries() {
  const code = $('entries-code').value;
  const shown = entries.filter((e) => !code || e.code === code);
  fill('entries-table', shown.length ? shown.map((e) => row([
    t('receipt.' + e.severity),
    e.record,
    e.record_id ? button(e.record_id, () => openRecord(entries.vendor, e.record_id), 'link open-record') : '',
    e.field, e.source, mono(e.code), e.message,
  ], 'entry ' + e.severity)) : [row([t('receipt.noentries'), '', '', '', '', '', ''])]);
}

async function openRecord(vendor, recordId) {
  $('record-view').hidden = false;
  $('record-title').textContent = t('record.title', { vendor, id: recordId });
  const out = $('record-out');
  out.replaceChildren();
  const res = await api('GET', `/api/v1/admin/records/${encodeURIComponent(vendor)}/${encodeURIComponent(recordId)}`);
  if (res.status !== 200) {
    say('record-status', res.status === 404 ? t('record.notfound') : failure(res), 'error');
    return;
  }
  say('record-status', '');
  const r = res.body;
  for (const rec of r.records || []) {
    const d = el('details');
    d.append(el('summary', t('record.canonical', { period: rec.reporting_period })), el('pre', json(rec.record)));
    out.append(d);
  }
  if (!(r.recipients || []).length) out.append(el('p', t('record.none'), 'hint'));
  for (const view of r.recipients || []) {
    const box = el('div', null, 'recipient-view');
    box.append(el('h4', t('record.got', { recipient: view.recipient })));
    for (const item of view.items) {
      const facts = el('dl');
      const add = (k, v) => facts.append(el('dt', k), el('dd', v === null || v === undefined ? '—' : v));
      add(t('col.kind'), item.kind);
      add(t('col.period'), item.reporting_period);
      add(t('col.at'), when(item.created_at));
      add(t('col.policy'), short(item.policy_version));
      add(t('col.basis'), item.legal_basis);
      add(t('col.consent'), item.consent_id);
      add(t('col.batch'), item.batch_id);
      box.append(facts);
      const table = el('table', null, 'fields-table');
      const head = el('thead');
      head.append(row([t('col.path'), t('col.action')]));
      const body = el('tbody');
      body.append(...(item.fields || []).map((f) => row([mono(f.path), f.action], 'action-' + String(f.action).split(':')[0])));
      table.append(head, body);
      const scroll = el('div', null, 'scroll');
      scroll.append(table);
      box.append(scroll);
      const raw = el('details');
      raw.append(el('summary', t('record.itembody')), el('pre', json(item.body)));
      box.append(raw);
    }
    out.append(box);
  }
  for (const n of r.not_routed || []) {
    out.append(el('p', t('record.notrouted', { recipient: n.recipient, note: n.note }), 'hint'));
  }
  $('record-view').scrollIntoView({ block: 'start' });
}

// --- recipients ---------------------------------------------------------------------------

async function loadRecipients() {
  const res = await api('GET', '/api/v1/admin/recipients');
  if (res.status !== 200) {
    say('recipients-status', failure(res), 'error');
    return;
  }
  fill('recipients-table', (res.body.recipients || []).map((r) => {
    const waiting = r.push ? r.push.waiting_items : (r.pull || {}).open_items;
    const lane = r.push ? (r.push.paused ? t('recipients.paused') : t('recipients.running')) : '—';
    const dead = r.push ? r.push.dead_letters : '—';
    return row([r.id, r.kind, r.purpose, r.legal_basis, num(waiting), lane, num(dead),
      button(t('common.open'), () => openRecipient(r.id), 'secondary open-recipient')], 'recipient');
  }));
}

let openRecipientId = null;

async function openRecipient(id) {
  openRecipientId = id;
  const res = await api('GET', `/api/v1/admin/recipients/${encodeURIComponent(id)}`);
  if (res.status !== 200) {
    say('recipients-status', failure(res), 'error');
    return;
  }
  const r = res.body;
  $('recipient-detail').hidden = false;
  $('recipient-title').textContent = `${r.id} — ${r.description || ''}`;
  dl('recipient-summary', [
    [t('col.kind'), r.kind],
    [t('col.purpose'), r.purpose],
    [t('col.basis'), r.legal_basis + (r.citation ? ` (${r.citation})` : '')],
    [t('col.policy'), mono(short(r.policy_version), r.policy_version)],
    [t('recipients.route'), Object.entries(r.route || {}).filter(([, v]) => v.length).map(([k, v]) => `${k}: ${v.join(', ')}`).join('; ')],
  ]);
  fill('recipient-fields', Object.entries(r.fields || {}).map(([k, v]) => row([mono(k), v])));
  const head = $('recipient-queue').tHead.rows[0];
  if (r.push) {
    const p = r.push;
    $('lane-buttons').hidden = false;
    say('lane-status', `${t('recipients.lane')}: ${p.paused ? t('recipients.paused') : t('recipients.running')}` +
      (p.next_attempt_at ? ` · ${t('recipients.nextattempt')}: ${when(p.next_attempt_at)}` : '') +
      (p.last_error ? ` · ${p.last_error}` : ''), p.paused ? 'error' : 'ok');
    $('lane-pause').disabled = p.paused;
    $('lane-resume').disabled = !p.paused;
    $('recipient-queue-title').textContent = t('recipients.groups');
    head.replaceChildren(...[t('col.batch'), t('col.items'), t('col.attempts'), t('col.last_error'), t('col.since')].map((x) => el('th', x)));
    fill('recipient-queue', (p.groups || []).map((g) => row([mono(short(g.id), g.id), num(g.items), num(g.attempts), g.last_error, when(g.updated_at)])));
    showDead(p.dead || []);
    fill('discarded-table', (p.discarded || []).map((g) =>
      row([mono(short(g.id), g.id), num(g.items), num(g.attempts), g.last_error, when(g.updated_at)])));
  } else {
    const p = r.pull || {};
    $('lane-buttons').hidden = true;
    say('lane-status', `${t('col.waiting')}: ${num(p.open_items)}`);
    $('recipient-queue-title').textContent = t('recipients.batches');
    head.replaceChildren(...[t('col.batch'), t('col.at'), t('col.items'), t('col.period'), t('col.state')].map((x) => el('th', x)));
    fill('recipient-queue', (p.batches || []).map((b) => row([mono(short(b.batch_id), b.batch_id), when(b.created_at), num(b.items), (b.periods || []).join(', '), b.state])));
    showDead([]);
    fill('discarded-table', []);
  }
}

function showDead(groups) {
  say('dead-status', groups.length ? '' : t('recipients.nodead'));
  fill('dead-table', groups.map((g) => {
    const actions = el('span');
    actions.append(
      button(t('recipients.replay'), () => settle(g.id, 'replay')), ' ',
      button(t('recipients.discard'), () => settle(g.id, 'discard'), 'secondary'));
    const refs = el('details');
    refs.append(el('summary', num((g.record_refs || []).length)), el('pre', (g.record_refs || []).join('\n')));
    return row([mono(short(g.id), g.id), num(g.items), refs, num(g.attempts), g.last_error, when(g.updated_at), actions]);
  }));
}

async function settle(id, action) {
  if (!window.confirm(t(action === 'replay' ? 'recipients.askreplay' : 'recipients.askdiscard', { id }))) return;
  const res = await api('POST', `/api/v1/admin/dead-letters/${encodeURIComponent(id)}/${action}`);
  if (res.status !== 200) {
    say('dead-status', failure(res), 'error');
    return;
  }
  await openRecipient(openRecipientId);
  say('dead-status', t('recipients.settled', { id, state: res.body.state }), 'ok');
}

async function setLane(paused) {
  const id = openRecipientId;
  const action = paused ? 'pause' : 'resume';
  const res = await api('POST', `/api/v1/admin/recipients/${encodeURIComponent(id)}/${action}`);
  if (res.status !== 200) {
    say('lane-status', failure(res), 'error');
    return;
  }
  await openRecipient(id);
  await loadRecipients();
  say('lane-status', t(paused ? 'recipients.pausedone' : 'recipients.resumedone', { id }), paused ? 'error' : 'ok');
}

// --- mappings and the editor --------------------------------------------------------------

let syntaxOf = {};
let inService = null; // {format, version, text, editable}

function showMappings(body) {
  $('mappings-dir').textContent = body.directory ? t('mappings.dir', { dir: body.directory }) : t('mappings.builtin');
  syntaxOf = {};
  const failedFiles = new Set((body.failures || []).map((f) => f.file));
  const select = $('editor-format');
  const chosen = select.value;
  select.replaceChildren();
  fill('mappings-table', (body.mappings || []).map((m) => {
    syntaxOf[m.format] = m.syntax;
    const option = el('option', m.format);
    option.value = m.format;
    select.append(option);
    const broken = failedFiles.has(m.file);
    const format = el('span', m.format);
    if (broken) format.append(el('span', ' ⚠ ' + t('mappings.previous'), 'warn'));
    const vendors = [...new Set([...(m.vendors || []), ...(m.used_by || [])])].join(', ');
    return row([format, m.syntax, m.description, vendors, mono(short(m.version), m.version), m.file], broken ? 'broken' : '');
  }));
  if (chosen) select.value = chosen;
  const failures = body.failures || [];
  fill('failures-table', failures.length
    ? failures.map((f) => row([f.file, f.line, f.error], 'broken'))
    : [row([t('common.none'), '', ''])]);
}

async function loadMappings() {
  const res = await api('GET', '/api/v1/admin/mappings');
  if (res.status === 200) showMappings(res.body);
  else $('mappings-dir').textContent = failure(res);
}

function fmtPath(format, rest) {
  return `/api/v1/admin/mappings/${encodeURIComponent(format)}${rest}`;
}

async function openEditor(event) {
  if (event) event.preventDefault();
  const format = $('editor-format').value;
  if (!format) return;
  const res = await api('GET', fmtPath(format, '/source'));
  if (res.status !== 200) {
    say('editor-source', failure(res), 'error');
    return;
  }
  inService = res.body;
  $('editor-text').value = inService.text || '';
  say('editor-source', `${inService.file} · ${t('editor.inservice')}: ${short(inService.version)}` +
    (inService.editable ? '' : ' · ' + t('editor.readonly')), inService.file_fails_to_load ? 'error' : '');
  $('editor-deploy').disabled = !inService.editable;
  $('diff-out').hidden = true;
  $('preview-side').hidden = true;
  await checkDraft();
  await loadVersions();
}

let checkTimer = null;
let checkSeq = 0;

function scheduleCheck() {
  clearTimeout(checkTimer);
  say('editor-status', t('editor.checking'));
  checkTimer = setTimeout(checkDraft, 350);
}

async function checkDraft() {
  if (!inService) return;
  const seq = ++checkSeq;
  const res = await api('POST', fmtPath(inService.format, '/check'), $('editor-text').value, 'text/plain; charset=utf-8');
  if (seq !== checkSeq) return;
  if (res.status !== 200) {
    say('editor-status', failure(res), 'error');
    return;
  }
  const problems = res.body.problems || [];
  say('editor-status', problems.length ? '' : t('editor.ok'), problems.length ? 'error' : 'ok');
  $('editor-problems').replaceChildren(...problems.map((p) => {
    const li = el('li');
    li.append(button(t('editor.problem', p), () => goToLine(p.line, p.column), 'link problem'));
    return li;
  }));
}

function goToLine(line, column) {
  const area = $('editor-text');
  const lines = area.value.split('\n');
  let start = 0;
  for (let i = 0; i < Math.max(0, line - 1) && i < lines.length; i++) start += lines[i].length + 1;
  const end = start + (lines[line - 1] || '').length;
  area.focus();
  area.setSelectionRange(start + Math.max(0, (column || 1) - 1), end);
}

function sideBySide(res, input) {
  $('preview-side').hidden = false;
  $('side-input').textContent = input;
  if (res.status !== 200) {
    say('preview-status', failure(res), 'error');
    $('side-records').textContent = '';
    $('side-views').textContent = '';
    return;
  }
  const r = res.body.receipt || {};
  say('preview-status', t('editor.result', r), r.status === 'E1' || r.status === 'E2' ? 'ok' : 'error');
  $('side-records').textContent = json(res.body.records);
  $('side-views').textContent = json(res.body.views);
}

async function previewDraft(draft) {
  if (!inService) return;
  const sample = $('sample-text').value;
  if (!sample.trim()) {
    say('preview-status', t('editor.nosample'), 'error');
    return;
  }
  let res;
  if (draft) {
    const body = JSON.stringify({ mapping: $('editor-text').value, sample });
    res = await api('POST', fmtPath(inService.format, '/preview?draft=true'), body, 'application/json');
  } else {
    const type = { json: 'application/json', xml: 'application/xml', csv: 'text/csv; charset=utf-8' }[syntaxOf[inService.format]];
    res = await api('POST', fmtPath(inService.format, '/preview'), sample, type);
  }
  sideBySide(res, sample);
}

/** A line diff (longest common subsequence) of two texts: [[' '|'-'|'+', line]]. */
function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push([' ', x[i], i + 1]); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { out.push(['+', y[j], j + 1]); j++; }
    else { out.push(['-', x[i], i + 1]); i++; }
  }
  return out;
}

function showDiff() {
  if (!inService) return;
  const lines = diffLines(inService.text || '', $('editor-text').value);
  const out = $('diff-out');
  out.hidden = false;
  out.replaceChildren();
  const changed = lines.map((l, k) => (l[0] !== ' ' ? k : -1)).filter((k) => k >= 0);
  if (!changed.length) {
    out.append(el('p', t('editor.nodiff'), 'hint'));
    return;
  }
  const keep = new Set();
  for (const k of changed) for (let d = -2; d <= 2; d++) keep.add(k + d);
  const pre = el('pre');
  let last = -1;
  lines.forEach((l, k) => {
    if (!keep.has(k)) return;
    if (last >= 0 && k !== last + 1) pre.append(el('span', '⋯\n', 'gap'));
    const cls = l[0] === '+' ? 'add' : l[0] === '-' ? 'del' : 'same';
    pre.append(el('span', `${l[0]} ${l[1]}\n`, cls));
    last = k;
  });
  out.append(pre);
}

async function deploy() {
  if (!inService) return;
  if (!window.confirm(t('editor.askdeploy', { format: inService.format }))) return;
  const res = await api('PUT', fmtPath(inService.format, ''), $('editor-text').value,
    'text/plain; charset=utf-8', { 'If-Match': `"${inService.version}"` });
  if (res.status === 409) {
    say('preview-status', t('editor.conflict', { message: (res.body || {}).message }), 'error');
    return;
  }
  if (res.status !== 200) {
    say('preview-status', failure(res), 'error');
    return;
  }
  const version = res.body.version;
  await openEditor();
  await loadMappings();
  say('preview-status', t('editor.deployed', { version: short(version) }), 'ok');
}

async function loadVersions() {
  if (!inService) return;
  const res = await api('GET', fmtPath(inService.format, '/versions'));
  if (res.status !== 200) {
    fill('versions-table', [row([failure(res), '', '', '', ''])]);
    return;
  }
  fill('versions-table', (res.body.versions || []).map((v) => {
    const current = v.version === res.body.in_service;
    const action = current
      ? el('span', t('editor.inservice'), 'ok')
      : button(t('editor.rollback'), () => rollback(v.version), 'secondary rollback');
    return row([mono(short(v.version), v.version), when(v.at), v.admin, v.action, action], current ? 'current' : '');
  }));
}

async function rollback(version) {
  if (!window.confirm(t('editor.askrollback', { version: short(version) }))) return;
  const res = await api('POST', fmtPath(inService.format, `/versions/${encodeURIComponent(version)}/deploy`));
  if (res.status !== 200) {
    say('preview-status', failure(res), 'error');
    return;
  }
  await openEditor();
  await loadMappings();
  say('preview-status', t('editor.deployed', { version: short(version) }), 'ok');
}

// --- audit --------------------------------------------------------------------------------

async function verifyAudit() {
  say('audit-status', t('audit.checking'));
  const res = await api('GET', '/api/v1/admin/audit/verify');
  $('audit-out').replaceChildren();
  if (res.status !== 200) {
    say('audit-status', failure(res), 'error');
    return;
  }
  const v = res.body;
  say('audit-status', v.intact ? t('audit.intact') : t('audit.broken'), v.intact ? 'ok' : 'error');
  dl('audit-out', [
    [t('audit.events'), num(v.events)],
    [t('audit.lasthash'), v.last_hash],
    [t('audit.firstbroken'), v.first_broken ? `seq ${v.first_broken.seq}: ${v.first_broken.reason}` : null],
    [t('audit.anchor'), v.anchor ? `seq ${v.anchor.seq}, ${v.anchor.hash}` : null],
  ]);
}

let eventsCursor = null;

async function loadEvents(event, more) {
  if (event) event.preventDefault();
  const p = new URLSearchParams();
  const set = (k, v) => { if (v) p.set(k, v); };
  set('kind', $('a-kind').value.trim());
  set('recipient', $('a-recipient').value.trim());
  set('since', dayStart($('a-since').value));
  set('until', dayStart($('a-until').value, 1));
  if (more && eventsCursor) p.set('cursor', eventsCursor);
  const res = await api('GET', '/api/v1/admin/audit/events?' + p);
  if (res.status !== 200) {
    say('events-status', failure(res), 'error');
    return;
  }
  const rows = (res.body.events || []).map((e) => row([num(e.seq), when(e.at), e.kind, e.vendor, e.recipient,
    mono(short(e.delivery_id), e.delivery_id), e.legal_basis, mono(short(e.policy_version), e.policy_version), e.note]));
  const body = $('events-table').tBodies[0];
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  eventsCursor = res.body.next_cursor;
  $('events-more').hidden = !eventsCursor;
  say('events-status', t('audit.count', { n: body.rows.length }));
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
  say('subject-status', t('subject.events', { n: events.length }), 'ok');
  fill('subject-table', events.map((e) => {
    const fields = el('details');
    fields.append(el('summary', String((e.fields || []).length)));
    fields.append(el('pre', (e.fields || []).map((f) => `${f.path}: ${f.action}`).join('\n')));
    return row([when(e.at), e.kind, e.recipient, e.legal_basis, e.consent_id, e.reporting_period,
      mono(short(e.record_ref), e.record_ref), fields, e.note]);
  }));
}

async function erase() {
  const { vendor, client } = subject();
  if (!vendor || !client) {
    say('subject-status', t('subject.needboth'), 'error');
    return;
  }
  const typed = window.prompt(t('subject.confirm', { client, vendor }));
  if (typed === null) return;
  if (typed.trim() !== client) {
    say('subject-status', t('subject.mismatch'), 'error');
    return;
  }
  const res = await api('DELETE',
    `/api/v1/admin/clients/${encodeURIComponent(vendor)}/${encodeURIComponent(client)}`);
  if (res.status !== 200) {
    say('subject-status', failure(res), 'error');
    return;
  }
  const b = res.body;
  if (b.found === false) say('subject-status', t('subject.nothing', { id: b.erasure_id }), 'warn');
  else say('subject-status', t('subject.erased', { id: b.erasure_id, records: b.erased_records, notified: b.notified }), 'ok');
  fill('subject-table', []);
}

// --- start --------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  applyTexts();
  $('lang').addEventListener('change', () => {
    lang = $('lang').value === 'en' ? 'en' : 'de';
    localStorage.setItem(LANG_KEY, lang);
    applyTexts();
    if (admin) {
      say('who', t('signin.as', { id: admin }), 'ok');
      show();
    }
  });
  $('signin').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', show);
  $('stats-form').addEventListener('submit', loadStats);
  $('deliveries-form').addEventListener('submit', (e) => loadDeliveries(e, false));
  $('deliveries-more').addEventListener('click', () => loadDeliveries(null, true));
  $('entries-code').addEventListener('change', showEntries);
  $('record-form').addEventListener('submit', (e) => {
    e.preventDefault();
    openRecord($('r-vendor').value.trim(), $('r-id').value.trim());
  });
  $('lane-pause').addEventListener('click', () => setLane(true));
  $('lane-resume').addEventListener('click', () => setLane(false));
  $('mappings-load').addEventListener('click', loadMappings);
  $('editor-open').addEventListener('submit', openEditor);
  $('editor-text').addEventListener('input', scheduleCheck);
  $('draft-preview').addEventListener('click', () => previewDraft(true));
  $('live-preview').addEventListener('click', () => previewDraft(false));
  $('editor-diff').addEventListener('click', showDiff);
  $('editor-deploy').addEventListener('click', deploy);
  $('audit-verify').addEventListener('click', verifyAudit);
  $('audit-form').addEventListener('submit', (e) => loadEvents(e, false));
  $('events-more').addEventListener('click', () => loadEvents(null, true));
  $('subject-form').addEventListener('submit', disclosure);
  $('subject-erase').addEventListener('click', erase);
  // The overview and the mappings list refresh themselves while they are shown.
  setInterval(() => {
    if (!admin || document.hidden) return;
    if (currentView() === 'overview') loadStats();
    if (currentView() === 'mappings') loadMappings();
  }, 30000);
  if (token()) signIn();
});
