// Weiche API documentation: renders the OpenAPI document of this gateway as text (no markup
// from the document is ever interpreted), grouped by tag, with parameters, bodies, answers and
// schemas.
'use strict';

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.append(c);
    else td.textContent = c === undefined || c === null ? '' : String(c);
    tr.append(td);
  }
  return tr;
}

function table(head, rows) {
  const wrap = el('div', null, 'scroll');
  const t = el('table');
  const h = el('thead');
  const hr = el('tr');
  for (const x of head) hr.append(el('th', x));
  h.append(hr);
  const b = el('tbody');
  b.append(...rows);
  t.append(h, b);
  wrap.append(t);
  return wrap;
}

function refName(ref) {
  return typeof ref === 'string' ? ref.split('/').pop() : '';
}

/** A schema as one short line: a reference's name, `array of …`, a type, or `one of …`. */
function schemaText(s) {
  if (!s || typeof s !== 'object') return '';
  if (s.$ref) return refName(s.$ref);
  if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map(schemaText).join(' | ');
  if (s.allOf) return s.allOf.map(schemaText).join(' & ');
  const type = Array.isArray(s.type) ? s.type.join(' | ') : s.type;
  if (type === 'array' || (Array.isArray(s.type) && s.type.includes('array'))) return 'array of ' + schemaText(s.items);
  return (type || 'any') + (s.format ? ` (${s.format})` : '') + (s.enum ? ': ' + s.enum.join(', ') : '');
}

/** Markdown-ish description as paragraphs of plain text. */
function description(text) {
  const box = el('div', null, 'desc');
  for (const para of String(text || '').split(/\n\n+/)) {
    box.append(el('p', para.replace(/\*\*/g, '').replace(/`/g, '')));
  }
  return box;
}

function resolve(doc, v) {
  if (v && v.$ref) {
    const parts = v.$ref.replace(/^#\//, '').split('/');
    return parts.reduce((o, k) => (o ? o[k] : undefined), doc) || {};
  }
  return v || {};
}

function render(doc) {
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!['get', 'post', 'put', 'delete', 'patch'].includes(method)) continue;
      const tag = (op.tags || ['other'])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ method, path, op });
    }
  }
  const toc = $('docs-toc');
  const ops = $('docs-ops');
  for (const [tag, list] of byTag) {
    const a = el('a', tag);
    a.href = '#tag-' + tag;
    toc.append(a);
    const h = el('h2', tag);
    h.id = 'tag-' + tag;
    ops.append(h);
    const info = (doc.tags || []).find((x) => x.name === tag);
    if (info && info.description) ops.append(el('p', info.description, 'hint'));
    for (const { method, path, op } of list) {
      const d = el('details', null, 'op');
      d.dataset.search = `${method} ${path} ${op.summary || ''} ${op.operationId || ''}`.toLowerCase();
      const s = el('summary');
      s.append(el('span', method.toUpperCase(), 'badge method'), ' ', el('code', path), ' — ', el('span', op.summary || ''));
      d.append(s, description(op.description));
      const params = (op.parameters || []).map((p) => resolve(doc, p));
      if (params.length) {
        d.append(el('h4', 'Parameters'), table(['name', 'in', 'required', 'schema', 'description'],
          params.map((p) => row([el('code', p.name), p.in, p.required ? 'yes' : 'no', schemaText(p.schema), p.description]))));
      }
      if (op.requestBody) {
        const rb = resolve(doc, op.requestBody);
        d.append(el('h4', 'Request body'), el('p', rb.description || ''), table(['media type', 'schema'],
          Object.entries(rb.content || {}).map(([m, c]) => row([el('code', m), schemaText(c.schema)]))));
      }
      const answers = Object.entries(op.responses || {}).map(([status, r]) => {
        const resp = resolve(doc, r);
        const media = Object.entries(resp.content || {}).map(([m, c]) => `${m}: ${schemaText(c.schema)}`).join('; ');
        return row([el('code', status), resp.description, media]);
      });
      d.append(el('h4', 'Answers'), table(['status', 'description', 'body'], answers));
      if (op.security && op.security.length) {
        d.append(el('p', 'Security: ' + op.security.map((r) => Object.keys(r).join(' + ')).join(' or '), 'hint'));
      }
      ops.append(d);
    }
  }
  const schemas = $('docs-schemas');
  for (const [name, s] of Object.entries((doc.components || {}).schemas || {})) {
    const d = el('details', null, 'op');
    d.dataset.search = name.toLowerCase();
    d.id = 'schema-' + name;
    d.append(el('summary', name));
    if (s.description) d.append(description(s.description));
    const required = new Set(s.required || []);
    const props = Object.entries(s.properties || {});
    if (props.length) {
      d.append(table(['property', 'schema', 'required', 'description'],
        props.map(([k, p]) => row([el('code', k), schemaText(p), required.has(k) ? 'yes' : 'no', p.description]))));
    } else {
      d.append(el('p', schemaText(s), 'mono'));
    }
    schemas.append(d);
  }
}

function filter() {
  const q = $('docs-q').value.trim().toLowerCase();
  for (const d of document.querySelectorAll('details.op')) d.hidden = q !== '' && !d.dataset.search.includes(q);
}

document.addEventListener('DOMContentLoaded', async () => {
  $('docs-filter').addEventListener('submit', (e) => e.preventDefault());
  $('docs-q').addEventListener('input', filter);
  try {
    const res = await fetch('/api/v1/openapi.json', { credentials: 'omit' });
    const doc = await res.json();
    $('docs-status').textContent = `${doc.info.title} ${doc.info.version} · OpenAPI ${doc.openapi}`;
    render(doc);
  } catch (e) {
    $('docs-status').textContent = 'The OpenAPI document could not be loaded.';
    $('docs-status').className = 'status error';
  }
});
