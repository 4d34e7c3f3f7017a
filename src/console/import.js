// Spreadsheet import: pick or drop a file, preview the mapping (dry run), change targets,
// start, follow progress, read the report, undo; past imports.
import { get, post, request } from './api.js';
import { h, replace, show, table } from './dom.js';
import { problemText, say, session } from './state.js';

const CURRENT = 'lg.import';
const mb = (n) => `${(n / (1024 * 1024)).toFixed(1)} MB`;

export async function importPage(main, ctx) {
  const [id] = ctx.args;
  if (id) return progressPage(main, id, ctx);
  return uploadPage(main, ctx);
}

/** Why this file cannot be uploaded, before any of it is read; null when it can. */
function refusal(file) {
  const { max_import_bytes: max, import_extensions: extensions } = session.settings;
  const ext = (file.name.split('.').pop() || '').toLowerCase();
  if (!file.name.includes('.') || !extensions.includes(ext)) {
    return `“${file.name}” is not a spreadsheet. Choose one of: ${extensions.join(', ')}.`;
  }
  if (max && file.size > max) {
    return `“${file.name}” is ${mb(file.size)}; the largest upload is ${mb(max)}. Split the file and import the parts.`;
  }
  if (file.size === 0) return `“${file.name}” is empty.`;
  return null;
}

async function uploadPage(main, { go }) {
  const input = h('input', {
    id: 'file', name: 'file', type: 'file', class: 'file',
    accept: session.settings.import_extensions.map((e) => `.${e}`).join(','),
    'aria-describedby': 'file-help',
  });
  const drop = h('div', { class: 'drop', id: 'drop' },
    h('label', { for: 'file' }, 'Choose a spreadsheet or drop it here'), input,
    h('p', { id: 'file-help', class: 'help' },
      `xlsx, xls, xlsb, ods, csv or tsv; at most ${mb(session.settings.max_import_bytes || 0)}.`));
  const error = h('p', { id: 'import-error', class: 'error', role: 'alert' });
  const preview = h('div', { id: 'preview' });
  const past = h('section', { 'aria-labelledby': 'past-title' }, h('h2', { id: 'past-title' }, 'Past imports'));
  replace(main, h('h1', {}, 'Import a spreadsheet'), drop, error, preview, past);

  const resume = sessionStorage.getItem(CURRENT);
  if (resume) {
    error.before(h('p', { class: 'note' }, 'An import you started is on its way: ',
      h('a', { href: `#/import/${encodeURIComponent(resume)}` }, 'see its progress'), '.'));
  }

  let file = null;
  const overrides = {};

  async function dryRun() {
    const form = new FormData();
    form.append('file', file);
    form.append('dry_run', 'true');
    if (Object.keys(overrides).length) form.append('mapping', JSON.stringify(overrides));
    return request('POST', '/v1/imports', { form });
  }

  async function choose(chosen) {
    error.textContent = '';
    preview.replaceChildren();
    const why = refusal(chosen);
    if (why) {
      error.textContent = why;
      return;
    }
    file = chosen;
    for (const key of Object.keys(overrides)) delete overrides[key];
    await showPreview();
  }

  async function showPreview() {
    replace(preview, h('p', { class: 'muted', role: 'status' }, `Reading ${file.name}…`));
    let dry;
    try {
      dry = await dryRun();
    } catch (e) {
      preview.replaceChildren();
      error.textContent = problemText(e);
      return;
    }
    const targets = ['ignore', ...dry.targets];
    const mapping = dry.mapping.columns.map((column) => {
      const id = `target-${column.index}`;
      const select = h('select', { id, 'aria-label': `Target of column ${column.header}` },
        [...new Set([...targets, column.target.startsWith('custom:') ? column.target : `custom:${column.header}`])]
          .map((t) => h('option', { value: t }, t)));
      select.value = column.target;
      select.addEventListener('change', async () => {
        overrides[column.header] = select.value;
        await showPreview();
        const again = document.getElementById(id);
        if (again) again.focus();
      });
      return [column.header, select, column.matched];
    });
    const fields = [...new Set(dry.rows.flatMap((row) => Object.keys(row.fields)))];
    const start = h('button', { type: 'button', id: 'start-import', class: 'primary' }, 'Start import');
    start.addEventListener('click', async () => {
      start.disabled = true;
      const form = new FormData();
      form.append('file', file);
      if (Object.keys(overrides).length) form.append('mapping', JSON.stringify(overrides));
      try {
        const accepted = await request('POST', '/v1/imports', { form });
        sessionStorage.setItem(CURRENT, accepted.id);
        go(`#/import/${encodeURIComponent(accepted.id)}`);
      } catch (e) {
        start.disabled = false;
        error.textContent = problemText(e);
      }
    });
    replace(preview,
      h('h2', {}, `Preview of ${file.name}`),
      h('p', { class: 'muted' }, `${dry.format}${dry.sheet ? `, sheet ${dry.sheet}` : ''}; header on row ${dry.header_row}; ${dry.rows_examined} rows examined.`),
      h('div', { class: 'scroll' }, table('Proposed column mapping', ['Column', 'Target', 'How it matched'], mapping, { id: 'mapping' })),
      h('div', { class: 'scroll' }, table('The first rows as they would be written', ['Row', ...fields],
        dry.rows.map((row) => [String(row.row), ...fields.map((f) => show(row.fields[f]))]), { id: 'preview-rows' })),
      dry.errors.length
        ? h('div', { class: 'scroll' }, table('The first rows that would be refused', ['Row', 'Column', 'Reason'],
          dry.errors.map((e) => [String(e.row), e.column || '—', e.reason]), { id: 'preview-errors' }))
        : h('p', { class: 'muted' }, 'No refused rows among those examined.'),
      start);
    start.focus();
  }

  input.addEventListener('change', () => { if (input.files[0]) choose(input.files[0]); });
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const dropped = event.dataTransfer && event.dataTransfer.files[0];
    if (dropped) choose(dropped);
  });

  try {
    const list = await get('/v1/imports?limit=50');
    past.append(list.items.length
      ? h('div', { class: 'scroll' }, table('Imports, newest first', ['File', 'Status', 'Read', 'Accepted', 'Rejected', 'By', 'Started'],
        list.items.map((i) => [
          h('a', { href: `#/import/${encodeURIComponent(i.id)}` }, i.file_name), i.status,
          String(i.rows_read), String(i.rows_accepted), String(i.rows_rejected_at_read),
          i.created_by || '—', i.created_at,
        ]), { id: 'past-imports' }))
      : h('p', { class: 'muted' }, 'No imports yet.'));
  } catch (e) {
    past.append(h('p', { class: 'muted' }, problemText(e)));
  }
}

function finished(status) {
  const s = status.status;
  return s === 'failed' || s === 'undone' || (s === 'done' && status.processed.pending === 0 && status.percent >= 100);
}

async function progressPage(main, id, { alive }) {
  const heading = h('h1', { tabindex: '-1' }, 'Import');
  const bar = h('progress', { id: 'progress', max: '100', value: '0', 'aria-label': 'Import progress' });
  const percent = h('span', { id: 'percent' }, '0%');
  const counts = h('dl', { class: 'tiles', id: 'counts' });
  const report = h('div', { id: 'report' });
  replace(main, h('p', { class: 'crumbs' }, h('a', { href: '#/import' }, 'Imports'), ' › progress'),
    heading, h('p', { class: 'progress-line' }, bar, ' ', percent), counts, report);
  heading.focus();

  const tile = (name, value, id2) => h('div', { class: `tile ${name}` }, h('dt', {}, name), h('dd', { id: id2 }, String(value)));

  for (;;) {
    if (!alive()) return;
    const status = await get(`/v1/imports/${encodeURIComponent(id)}`);
    heading.textContent = `Import of ${status.file_name}`;
    bar.value = status.percent;
    percent.textContent = `${status.percent}% · ${status.status}`;
    const p = status.processed;
    const rejected = status.rows_rejected_at_read + p.failed;
    replace(counts,
      tile('read', status.rows_read, 'count-read'),
      tile('created', p.created, 'count-created'),
      tile('merged', p.merged, 'count-merged'),
      tile('review', p.review, 'count-review'),
      tile('rejected', rejected, 'count-rejected'),
      tile('pending', p.pending, 'count-pending'));
    if (finished(status)) {
      if (sessionStorage.getItem(CURRENT) === id) sessionStorage.removeItem(CURRENT);
      renderReport(report, status);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 600));
  }
}

async function renderReport(report, status) {
  const id = status.id;
  const undo = h('button', { type: 'button', id: 'undo-import' }, 'Undo this import');
  const undone = h('p', { id: 'undo-result', role: 'status' });
  undo.addEventListener('click', async () => {
    if (!window.confirm('Undo this import? Records it created are removed and fields it changed are restored.')) return;
    undo.disabled = true;
    try {
      const result = await post(`/v1/imports/${encodeURIComponent(id)}/undo`);
      undone.textContent = `Undone: ${Object.entries(result).map(([k, v]) => `${k} ${show(v)}`).join(', ')}.`;
    } catch (e) {
      undo.disabled = false;
      undone.textContent = problemText(e);
    }
  });
  const rows = status.errors.map((e) => [String(e.row), e.column || '—', e.reason]);
  replace(report,
    h('h2', { id: 'report-title' }, status.status === 'done' ? 'Finished' : `Import ${status.status}`),
    status.error ? h('p', { class: 'error' }, status.error) : null,
    rows.length
      ? h('div', { class: 'scroll' }, table(`Rejected rows (the first ${rows.length}; the CSV has them all)`, ['Row', 'Column', 'Reason'], rows, { id: 'rejected-rows' }))
      : h('p', { class: 'muted' }, 'No row was rejected.'),
    h('p', {}, h('a', { href: `/v1/imports/${encodeURIComponent(id)}/errors.csv`, download: `import-${id}-errors.csv`, id: 'errors-csv' }, 'Download the error CSV')),
    status.status === 'done' && session.can('inbox', 'update') && session.can('leads', 'delete') ? undo : null,
    undone);
  say(`Import ${status.status}.`);
}
