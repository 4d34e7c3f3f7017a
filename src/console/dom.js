// Building DOM without ever parsing data as HTML: every text goes in as a text node.

/** An element with attributes, event handlers (`onclick`…) and children (nodes or text). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  add(el, children);
  return el;
}

/** Appends children (nested arrays flattened; null/false skipped; text as text nodes). */
export function add(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&#x27;': "'" };

function unescape(text) {
  return text.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (m) => ENTITIES[m]);
}

/**
 * Search highlights come as HTML-escaped text with `<mark>` around matches. They are
 * split on the two tags and every piece becomes a text node: nothing is parsed as HTML.
 */
export function highlighted(html) {
  const parts = String(html).split(/<mark>|<\/mark>/);
  const out = document.createDocumentFragment();
  parts.forEach((part, i) => {
    const text = unescape(part);
    if (!text) return;
    out.append(i % 2 === 1 ? h('mark', {}, text) : document.createTextNode(text));
  });
  return out;
}

/** A value as display text: objects as compact JSON, nothing as an em dash. */
export function show(value) {
  if (value === null || value === undefined || value === '') return '—';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A definition list of fields, in name order. */
export function fieldList(fields, { skip = [] } = {}) {
  const dl = h('dl', { class: 'fields' });
  for (const name of Object.keys(fields || {}).sort()) {
    if (skip.includes(name)) continue;
    dl.append(h('dt', {}, name), h('dd', {}, show(fields[name])));
  }
  return dl;
}

/** A table with a caption, header cells and rows of cells (nodes or text). */
export function table(caption, headers, rows, attrs = {}) {
  return h('table', attrs,
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, headers.map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell))))));
}

/** The best name of a record for a heading or a link. */
export function title(record) {
  const f = (record && record.fields) || {};
  const person = [f.first_name, f.last_name].filter(Boolean).join(' ');
  return person || f.name || f.full_name || f.company || f.subject || f.number
    || f.email || (record && record.id) || '';
}

/** Debounces a function: it runs `ms` after the last call. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
