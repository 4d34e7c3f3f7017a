// Search, record, review queue and inbox health.
import { get, post, request } from './api.js';
import { debounce, fieldList, h, highlighted, replace, show, table, title } from './dom.js';
import { problemText, say, session } from './state.js';

const SEARCHABLE = ['leads', 'contacts', 'accounts', 'opportunities', 'tickets', 'orders', 'invoices', 'renewals'];

const recordHref = (kind, id) => `#/record/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;

// ---------------------------------------------------------------- search

export async function searchPage(main, { params }) {
  const kinds = SEARCHABLE.filter((kind) => session.can(kind, 'read'));
  const q = h('input', {
    id: 'q', name: 'q', type: 'search', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'Name, email, phone, company, number…', 'aria-describedby': 'search-help',
    'aria-controls': 'results',
  });
  q.value = params.get('q') || '';
  const kind = h('select', { id: 'kind', name: 'kind' },
    h('option', { value: '' }, 'All kinds'),
    kinds.map((k) => h('option', { value: k }, k)));
  kind.value = params.get('kind') || '';
  const owner = h('input', { id: 'owner', name: 'owner', type: 'text', autocomplete: 'off', placeholder: 'user id' });
  owner.value = params.get('owner') || '';
  const summary = h('p', { id: 'search-summary', class: 'muted', 'aria-live': 'polite' });
  const results = h('ol', { id: 'results', class: 'results', 'aria-label': 'Search results' });
  const form = h('form', { role: 'search', class: 'search', onsubmit: (e) => { e.preventDefault(); run(); } },
    h('div', { class: 'grow' }, h('label', { for: 'q' }, 'Search records'), q),
    h('div', {}, h('label', { for: 'kind' }, 'Kind'), kind),
    h('div', {}, h('label', { for: 'owner' }, 'Owner'), owner));
  replace(main,
    h('h1', {}, 'Search'),
    form,
    h('p', { id: 'search-help', class: 'help' }, 'Results appear as you type; typos and any phone format are fine. Down arrow moves into the results.'),
    summary, results);

  let inflight;
  async function run() {
    const text = q.value.trim();
    const query = new URLSearchParams();
    if (text) query.set('q', text);
    if (kind.value) query.set('kind', kind.value);
    if (owner.value.trim()) query.set('owner', owner.value.trim());
    history.replaceState(null, '', `#/search${query.toString() ? `?${query}` : ''}`);
    if (!text) {
      results.replaceChildren();
      summary.textContent = '';
      return;
    }
    if (inflight) inflight.abort();
    inflight = new AbortController();
    query.set('limit', '20');
    try {
      const answer = await get(`/v1/search?${query}`, { signal: inflight.signal });
      renderHits(answer);
    } catch (error) {
      if (error.name === 'AbortError') return;
      summary.textContent = problemText(error);
    }
  }

  function renderHits(answer) {
    results.replaceChildren();
    summary.textContent = answer.hits.length
      ? `${answer.hits.length} result${answer.hits.length === 1 ? '' : 's'} in ${answer.took_ms.toFixed(1)} ms`
      : 'No records match.';
    for (const hit of answer.hits) {
      const marks = hit.highlights || {};
      const [name, used] = hitTitle(hit, marks);
      const link = h('a', { href: recordHref(hit.kind, hit.id), class: 'hit-title' }, name);
      const details = h('ul', { class: 'matches' },
        Object.entries(marks)
          .filter(([field]) => !used.includes(field))
          .map(([field, html]) => h('li', {}, h('span', { class: 'field-name' }, `${field}: `), highlighted(html))));
      results.append(h('li', { class: 'hit' },
        h('span', { class: 'badge' }, hit.kind), ' ', link,
        hit.fields.email ? h('span', { class: 'muted' }, ` · ${hit.fields.email}`) : null,
        details));
    }
  }

  const later = debounce(run, 180);
  q.addEventListener('input', later);
  owner.addEventListener('input', later);
  kind.addEventListener('change', run);
  q.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown') {
      const first = results.querySelector('a');
      if (first) { event.preventDefault(); first.focus(); }
    }
  });
  results.addEventListener('keydown', (event) => {
    const links = [...results.querySelectorAll('a')];
    const at = links.indexOf(document.activeElement);
    if (at < 0) return;
    if (event.key === 'ArrowDown' && at + 1 < links.length) { event.preventDefault(); links[at + 1].focus(); }
    if (event.key === 'ArrowUp') { event.preventDefault(); (at === 0 ? q : links[at - 1]).focus(); }
  });
  q.focus();
  if (q.value) await run();
}

/** A hit's title with its own matches highlighted, and the fields it shows. */
function hitTitle(hit, marks) {
  const f = hit.fields || {};
  const part = (field) => (marks[field] ? highlighted(marks[field]) : String(f[field]));
  const person = ['first_name', 'last_name'].filter((field) => f[field]);
  if (person.length) return [person.flatMap((field, i) => (i ? [' ', part(field)] : [part(field)])), person];
  const field = ['name', 'full_name', 'company', 'subject', 'number', 'email'].find((k) => f[k]);
  if (field) return [part(field), [field]];
  return [hit.id, []];
}

// ---------------------------------------------------------------- record

/** Fields that name another record, and that record's kind. */
const REFERENCES = {
  lead_id: 'leads', contact_id: 'contacts', account_id: 'accounts', opportunity_id: 'opportunities',
  ticket_id: 'tickets', order_id: 'orders', invoice_id: 'invoices', payment_id: 'payments',
  converted_account_id: 'accounts', converted_contact_id: 'contacts', converted_opportunity_id: 'opportunities',
  merged_into_id: 'leads', corrects_invoice_id: 'invoices',
};

/** Records that point at this kind: the kinds to list and the field to filter on. */
const REFERRERS = {
  accounts: [['contacts', 'account_id'], ['opportunities', 'account_id'], ['tickets', 'account_id'],
    ['orders', 'account_id'], ['invoices', 'account_id'], ['renewals', 'account_id'], ['leads', 'account_id']],
  contacts: [['opportunities', 'contact_id'], ['tickets', 'contact_id'], ['orders', 'contact_id']],
  opportunities: [['orders', 'opportunity_id']],
  orders: [['invoices', 'order_id']],
};

/** The fields that have a value (empty ones only make the page longer). */
function filled(fields) {
  return Object.fromEntries(Object.entries(fields || {})
    .filter(([, v]) => v !== null && v !== '' && !(typeof v === 'object' && Object.keys(v).length === 0)));
}

export async function recordPage(main, { args }) {
  const [kind, id] = args;
  if (!kind || !id) throw new Error('No record named.');
  const record = await get(`/v1/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`);
  const heading = h('h1', { tabindex: '-1' }, title(record));
  const related = h('ul', { class: 'related', 'aria-label': 'Related records' });
  const timeline = h('section', { 'aria-labelledby': 'timeline-title' }, h('h2', { id: 'timeline-title' }, 'Timeline'));
  const audit = h('section', { 'aria-labelledby': 'audit-title' }, h('h2', { id: 'audit-title' }, 'Audit trail'));
  replace(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/search' }, 'Search'), ` › ${kind}`),
    heading,
    h('p', { class: 'muted' }, `${kind} ${record.id} · version ${record.version} · created ${record.created_at} · updated ${record.updated_at}`),
    h('div', { class: 'columns' },
      h('section', { 'aria-labelledby': 'fields-title' }, h('h2', { id: 'fields-title' }, 'Fields'), fieldList(filled(record.fields))),
      h('section', { 'aria-labelledby': 'related-title' }, h('h2', { id: 'related-title' }, 'Related records'), related)),
    timeline, audit);
  heading.focus();

  const jobs = [];
  for (const [field, target] of Object.entries(REFERENCES)) {
    const ref = record.fields[field];
    if (typeof ref === 'string' && ref && session.can(target, 'read')) {
      const link = h('a', { href: recordHref(target, ref) }, ref);
      related.append(h('li', {}, h('span', { class: 'badge' }, field.replace(/_id$/, '')), ' ', link));
      jobs.push(get(`/v1/${target}/${encodeURIComponent(ref)}`)
        .then((other) => { link.textContent = title(other) || ref; })
        .catch(() => {}));
    }
  }
  for (const [other, field] of REFERRERS[kind] || []) {
    if (!session.can(other, 'read')) continue;
    jobs.push(get(`/v1/${other}?${field}=${encodeURIComponent(id)}&limit=20`).then((list) => {
      for (const item of list.items) {
        related.append(h('li', {}, h('span', { class: 'badge' }, other), ' ',
          h('a', { href: recordHref(other, item.id) }, title(item))));
      }
    }).catch(() => {}));
  }
  if (session.can('activities', 'read')) {
    jobs.push(get(`/v1/${kind}/${encodeURIComponent(id)}/timeline?limit=100`).then((answer) => {
      if (!answer.items.length) { timeline.append(h('p', { class: 'muted' }, 'Nothing on the timeline yet.')); return; }
      timeline.append(h('ol', { class: 'timeline' }, answer.items.map((item) => {
        const f = item.fields;
        return h('li', {},
          h('time', { datetime: f.occurred_at || item.created_at }, f.occurred_at || item.created_at), ' ',
          h('span', { class: 'badge' }, f.activity_type || 'activity'),
          f.channel ? h('span', { class: 'muted' }, ` ${f.channel}`) : null,
          f.direction ? h('span', { class: 'muted' }, ` ${f.direction}`) : null,
          h('div', { class: 'subject' }, f.subject || ''),
          f.body ? h('div', { class: 'body' }, f.body) : null,
          f.data ? h('details', {}, h('summary', {}, 'Details'), fieldList(typeof f.data === 'object' ? f.data : { data: f.data })) : null);
      })));
    }).catch((error) => timeline.append(h('p', { class: 'muted' }, problemText(error)))));
  } else {
    timeline.append(h('p', { class: 'muted' }, 'Your role does not read activities.'));
  }
  if (session.can('audit', 'read')) {
    jobs.push(get(`/v1/${kind}/${encodeURIComponent(id)}/audit?limit=200`).then((answer) => {
      audit.append(table('Every change of this record', ['When', 'Who', 'Action', 'Field', 'Old → new', 'IP', 'User agent'],
        answer.items.map((e) => [
          e.at, e.actor, e.action, e.field || '—',
          e.field ? `${show(e.old_value)} → ${show(e.new_value)}` : '',
          e.ip || '—', e.user_agent || '—',
        ]), { class: 'audit' }));
    }).catch((error) => audit.append(h('p', { class: 'muted' }, problemText(error)))));
  } else {
    audit.append(h('p', { class: 'muted' }, 'Your role does not read the audit trail.'));
  }
  await Promise.all(jobs);
  if (!related.children.length) related.append(h('li', { class: 'muted' }, 'None.'));
}

// ---------------------------------------------------------------- review

export async function reviewPage(main, { alive }) {
  const answer = await get('/v1/review?limit=200');
  const pairs = answer.items;
  let at = 0;
  // The survivor chosen per conflicting field of the pair on screen (A unless changed).
  let choice = {};
  const body = h('div', { id: 'pair' });
  const counter = h('p', { class: 'muted', 'aria-live': 'polite', id: 'review-count' });
  const message = h('p', { id: 'review-message', role: 'alert', class: 'note' });
  replace(main,
    h('h1', {}, 'Review queue'),
    h('p', { class: 'help' }, 'Keys: m merge · n not a duplicate · j or → next · k or ← previous.'),
    counter, message, body);

  function render() {
    if (!pairs.length) {
      counter.textContent = 'The queue is empty.';
      body.replaceChildren();
      return;
    }
    at = Math.max(0, Math.min(at, pairs.length - 1));
    const pair = pairs[at];
    counter.textContent = `Pair ${at + 1} of ${pairs.length}`;
    const a = (pair.a && pair.a.fields) || {};
    const b = (pair.b && pair.b.fields) || {};
    const scores = {};
    for (const f of (pair.breakdown && pair.breakdown.fields) || []) scores[f.field] = f;
    const names = [...new Set([...Object.keys(a), ...Object.keys(b)])]
      .filter((n) => !['field_sources', 'custom'].includes(n)).sort();
    choice = {};
    const rows = names.filter((n) => a[n] != null || b[n] != null).map((name) => {
      const score = scores[name];
      // Survivors are chosen among the compared fields (names, email, phone, company…).
      const conflict = score && a[name] != null && b[name] != null && show(a[name]) !== show(b[name]);
      let keep = '';
      if (conflict) {
        const group = `keep-${name}`;
        const radio = (side, label) => {
          const input = h('input', { type: 'radio', name: group, id: `${group}-${side}`, value: side, checked: side === 'a' });
          input.addEventListener('change', () => { choice[name] = side; });
          return h('span', { class: 'keep' }, input, h('label', { for: `${group}-${side}`, class: 'inline' }, label));
        };
        keep = h('fieldset', { class: 'survivor' }, h('legend', { class: 'sr-only' }, `Keep which ${name}`), radio('a', 'A'), radio('b', 'B'));
      }
      return [
        name,
        show(a[name]),
        show(b[name]),
        score ? `${score.similarity.toFixed(2)} (${score.agreement}, ${score.weight >= 0 ? '+' : ''}${score.weight.toFixed(2)})` : '—',
        keep,
      ];
    });
    const total = pair.breakdown && typeof pair.breakdown.total === 'number' ? pair.breakdown.total : pair.score;
    const merge = h('button', { type: 'button', id: 'merge', 'aria-keyshortcuts': 'm', onclick: () => decide('merge') }, 'Merge (m)');
    const distinct = h('button', { type: 'button', id: 'not-duplicate', 'aria-keyshortcuts': 'n', onclick: () => decide('not_a_duplicate') }, 'Not a duplicate (n)');
    replace(body,
      h('p', {}, `Total score ${total.toFixed(2)}`, pair.breakdown && pair.breakdown.names_swapped ? ' · first and last names swapped' : ''),
      h('p', {}, 'A: ', h('a', { href: recordHref(pair.kind, pair.record_a) }, title(pair.a) || pair.record_a),
        ' · B: ', h('a', { href: recordHref(pair.kind, pair.record_b) }, title(pair.b) || pair.record_b)),
      h('div', { class: 'scroll' }, table(`Candidate pair ${pair.id}`, ['Field', 'A (kept)', 'B (merged in)', 'Score', 'Survivor'], rows, { class: 'pair' })),
      h('div', { class: 'actions' }, merge, distinct,
        h('button', { type: 'button', onclick: () => { at -= 1; render(); }, disabled: at === 0 }, 'Previous (k)'),
        h('button', { type: 'button', onclick: () => { at += 1; render(); }, disabled: at + 1 >= pairs.length }, 'Next (j)')));
  }

  let busy = false;
  async function decide(decision) {
    if (busy || !pairs.length) return;
    busy = true;
    const pair = pairs[at];
    try {
      await post(`/v1/review/${encodeURIComponent(pair.id)}`, { decision });
      // Where the steward kept B's value, the merged record takes it (an audited PATCH).
      const keepB = Object.entries(choice).filter(([, side]) => side === 'b');
      if (decision === 'merge' && keepB.length && pair.b) {
        const fields = Object.fromEntries(keepB.map(([name]) => [name, pair.b.fields[name]]));
        await request('PATCH', `/v1/${pair.kind}/${encodeURIComponent(pair.record_a)}`, { json: fields })
          .catch((error) => say(`Merged, but keeping B's values failed: ${problemText(error)}`, 'error'));
      }
      message.textContent = decision === 'merge' ? 'Merged.' : 'Marked as two different records.';
    } catch (error) {
      if (error.status === 409) {
        message.textContent = `This pair was already resolved (${problemText(error)}); moving on.`;
      } else {
        message.textContent = problemText(error);
        busy = false;
        return;
      }
    }
    pairs.splice(at, 1);
    busy = false;
    render();
  }

  const keys = (event) => {
    if (!alive()) { document.removeEventListener('keydown', keys); return; }
    if (event.target.closest && event.target.closest('input, select, textarea')) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === 'm') decide('merge');
    else if (event.key === 'n') decide('not_a_duplicate');
    else if (event.key === 'j' || event.key === 'ArrowRight') { at += 1; render(); }
    else if (event.key === 'k' || event.key === 'ArrowLeft') { at -= 1; render(); }
  };
  document.addEventListener('keydown', keys);
  render();
}

// ---------------------------------------------------------------- inbox

export async function inboxPage(main, { alive }) {
  const summary = h('div', { id: 'depth' });
  const channels = h('div', { id: 'channels' });
  const failed = h('div', { id: 'failed' });
  replace(main, h('h1', {}, 'Inbox health'), summary,
    h('h2', {}, 'Per channel'), channels,
    h('h2', {}, 'Failed inbound rows'), failed);

  async function refresh() {
    const [counts, rows] = await Promise.all([
      get('/v1/inbound/channels'),
      get('/v1/inbound?status=failed&limit=200'),
    ]);
    const d = counts.depth;
    replace(summary, h('dl', { class: 'tiles' },
      ['pending', 'processing', 'failed', 'done'].map((k) => h('div', { class: `tile ${k}` }, h('dt', {}, k), h('dd', {}, String(d[k]))))));
    replace(channels, table('Inbound rows by channel and state', ['Channel', 'Pending', 'Processing', 'Failed', 'Done'],
      counts.channels.map((c) => [c.channel, String(c.pending), String(c.processing), String(c.failed), String(c.done)])));
    if (!rows.items.length) {
      replace(failed, h('p', { class: 'muted' }, 'No failed rows.'));
      return;
    }
    const canRetry = session.can('inbox', 'update');
    replace(failed, h('div', { class: 'scroll' }, table('Failed rows, oldest first', ['Id', 'Source', 'Received', 'Attempts', 'Error', ''],
      rows.items.map((row) => [
        row.id, row.source, row.received_at, String(row.attempts), row.error || '—',
        canRetry ? h('button', {
          type: 'button', 'aria-label': `Retry ${row.id}`,
          onclick: async (event) => {
            event.target.disabled = true;
            try {
              await post(`/v1/inbound/${encodeURIComponent(row.id)}/retry`);
              say(`Inbound ${row.id} queued again.`);
            } catch (error) {
              say(problemText(error), 'error');
            }
            await refresh();
          },
        }, 'Retry') : '',
      ]))));
  }
  await refresh();
  const timer = setInterval(() => {
    if (!alive()) { clearInterval(timer); return; }
    refresh().catch(() => {});
  }, 5000);
}


