// Strata's web UI: a page per path (/graph, /stores, /rules, /alerts), drawn with the DOM and
// inline SVG over the HTTP API. No build step and no dependencies.
'use strict';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (v !== false && v !== undefined && v !== null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// GET an API path; resolves to the parsed JSON body ({status, data, warnings, error}).
async function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  let resp;
  try {
    resp = await fetch(path + (q ? '?' + q : ''));
  } catch (e) {
    return { status: 'error', error: 'request failed: ' + e };
  }
  if (resp.status === 404) return { status: 'error', error: path + ' is not served here', notFound: true };
  try {
    return await resp.json();
  } catch (e) {
    return { status: 'error', error: 'HTTP ' + resp.status + ': the answer is not JSON' };
  }
}

function labelText(metric) {
  const name = metric.__name__ || '';
  const rest = Object.keys(metric).filter((k) => k !== '__name__').sort()
    .map((k) => k + '=' + JSON.stringify(metric[k]));
  return name + '{' + rest.join(', ') + '}';
}

function fmtTime(sec) {
  return new Date(sec * 1000).toISOString().replace('.000Z', 'Z');
}

function fmtMs(ms) {
  if (ms <= -9e15 || ms >= 9e15) return ms < 0 ? '−∞' : '+∞';
  return fmtTime(ms / 1000);
}

// Seconds of a Prometheus-style duration (`90s`, `1h30m`, `2d`); NaN when invalid.
function parseDuration(s) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/g;
  let total = 0;
  let used = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    total += parseFloat(m[1]) * units[m[2]];
    used += m[0].length;
  }
  if (/^\d+(\.\d+)?$/.test(s)) return parseFloat(s);
  return used === s.length && used > 0 ? total : NaN;
}

// Replaces `node`'s children with `cs` (nested arrays flattened, null and undefined left out).
function put(node, ...cs) {
  node.replaceChildren(...cs.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function messages(r) {
  return [
    ...(r.warnings || []).map((w) => el('div', { class: 'warn' }, 'Warning: ' + w)),
    ...(r.infos || []).map((w) => el('div', { class: 'warn' }, 'Info: ' + w)),
    r.status === 'success' ? null : el('div', { class: 'err' }, (r.errorType ? r.errorType + ': ' : '') + r.error),
  ];
}

// ---- /graph ----

function graphPage(main) {
  const params = new URLSearchParams(location.search);
  const state = { tab: params.get('tab') === 'graph' ? 'graph' : 'table' };
  const expr = el('textarea', { id: 'expr', placeholder: 'PromQL expression, e.g. up' });
  expr.value = params.get('expr') || '';
  const range = el('input', { type: 'text', id: 'range', value: params.get('range') || '1h', title: 'graph range' });
  const end = el('input', { type: 'text', id: 'end', value: params.get('end') || '', placeholder: 'now', title: 'evaluation time / range end (RFC 3339 or Unix seconds)' });
  const step = el('input', { type: 'text', id: 'step', value: params.get('step') || '', placeholder: 'auto', title: 'range step' });
  const dedup = el('input', { type: 'checkbox', id: 'dedup', checked: params.get('dedup') !== 'false' });
  const partial = el('input', { type: 'checkbox', id: 'partial', checked: params.get('partial_response') !== 'false' });
  const out = el('div', { id: 'result' });
  const tabs = el('span', { class: 'tabs' });
  const drawTabs = () => {
    put(tabs, ...['table', 'graph'].map((t) => el('button', {
      type: 'button', class: state.tab === t ? 'on' : '', on: { click: () => { state.tab = t; drawTabs(); run(); } },
    }, t === 'table' ? 'Table' : 'Graph')));
  };
  const run = async () => {
    const q = expr.value.trim();
    if (!q) return;
    const opts = { dedup: String(dedup.checked), partial_response: String(partial.checked) };
    history.replaceState(null, '', '/graph?' + new URLSearchParams({
      expr: q, tab: state.tab, range: range.value, end: end.value, step: step.value, ...opts,
    }));
    let endSec = Date.now() / 1000;
    if (end.value.trim()) {
      const v = end.value.trim();
      endSec = /^\d+(\.\d+)?$/.test(v) ? parseFloat(v) : Date.parse(v) / 1000;
      if (Number.isNaN(endSec)) return put(out, el('div', { class: 'err' }, 'bad end time: ' + v));
    }
    put(out, el('span', { class: 'muted' }, 'Running…'));
    if (state.tab === 'table') {
      const r = await api('/api/v1/query', { query: q, time: String(endSec), ...opts });
      put(out, ...messages(r), r.status === 'success' ? resultTable(r.data) : null);
      return;
    }
    const secs = parseDuration(range.value.trim());
    if (!(secs > 0)) return put(out, el('div', { class: 'err' }, 'bad range: ' + range.value));
    let stepSec = step.value.trim() ? parseDuration(step.value.trim()) : Math.max(1, Math.round(secs / 250));
    if (!(stepSec > 0)) return put(out, el('div', { class: 'err' }, 'bad step: ' + step.value));
    const r = await api('/api/v1/query_range', {
      query: q, start: String(endSec - secs), end: String(endSec), step: String(stepSec), ...opts,
    });
    put(out, ...messages(r), r.status === 'success' ? lineGraph(r.data.result, endSec - secs, endSec) : null);
  };
  expr.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); run(); } });
  drawTabs();
  put(main,
    expr,
    el('div', { class: 'controls' },
      el('button', { type: 'button', id: 'execute', on: { click: run } }, 'Execute'), tabs,
      el('label', {}, 'Range ', range), el('label', {}, 'End ', end), el('label', {}, 'Step ', step),
      el('label', {}, dedup, ' Deduplication'), el('label', {}, partial, ' Partial response')),
    out);
  if (expr.value) run();
}

function resultTable(data) {
  const rows = [];
  if (data.resultType === 'scalar' || data.resultType === 'string') {
    rows.push(el('tr', {}, el('td', {}, data.resultType), el('td', { class: 'num' }, String(data.result[1]))));
  } else if (data.resultType === 'vector') {
    for (const s of data.result) {
      const v = s.value ? s.value[1] : (s.histogram ? 'histogram (count ' + s.histogram[1].count + ')' : '');
      rows.push(el('tr', {}, el('td', { class: 'mono' }, labelText(s.metric)), el('td', { class: 'num' }, v)));
    }
  } else {
    for (const s of data.result) {
      const vals = (s.values || []).map((p) => p[1] + ' @' + p[0]).join('\n');
      rows.push(el('tr', {}, el('td', { class: 'mono' }, labelText(s.metric)), el('td', { class: 'num', style: 'white-space: pre' }, vals)));
    }
  }
  if (!rows.length) return el('p', { class: 'muted' }, 'Empty result.');
  return el('table', {}, el('tr', {}, el('th', {}, 'Series'), el('th', {}, 'Value')), rows);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function lineGraph(result, start, end) {
  if (!result.length) return el('p', { class: 'muted' }, 'Empty result.');
  const W = 900, H = 320, L = 70, R = 10, T = 10, B = 30;
  let lo = Infinity, hi = -Infinity;
  for (const s of result) for (const [, v] of s.values || []) {
    const f = parseFloat(v);
    if (Number.isFinite(f)) { lo = Math.min(lo, f); hi = Math.max(hi, f); }
  }
  if (lo === Infinity) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (t) => L + ((t - start) / Math.max(end - start, 1e-9)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const g = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, id: 'graph' });
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4, t = start + ((end - start) * i) / 4;
    g.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#eee' }));
    g.append(svg('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' }, Number(v.toPrecision(4)).toString()));
    g.append(svg('text', { x: x(t), y: H - 10, 'text-anchor': 'middle' }, fmtTime(Math.round(t)).slice(11, 19)));
  }
  const legend = el('div', { class: 'legend' });
  result.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    // A gap (missing step or non-finite value) starts a new line segment.
    let d = '', prev = null;
    const stepGap = result.length && s.values && s.values.length > 1 ? (s.values[1][0] - s.values[0][0]) * 1.5 : Infinity;
    for (const [t, v] of s.values || []) {
      const f = parseFloat(v);
      if (!Number.isFinite(f)) { prev = null; continue; }
      d += (prev === null || t - prev > stepGap ? 'M' : 'L') + x(t).toFixed(1) + ',' + y(f).toFixed(1);
      prev = t;
    }
    const path = svg('path', { d: d || 'M0,0', fill: 'none', stroke: color, 'stroke-width': 1.5 });
    path.append(svg('title', {}, labelText(s.metric)));
    g.append(path);
    legend.append(el('span', {}, el('i', { style: 'background:' + color }), labelText(s.metric)));
  });
  const wrap = el('div', {});
  wrap.append(g, legend);
  return wrap;
}

// ---- /stores ----

async function storesPage(main) {
  const r = await api('/api/v1/stores');
  if (r.status !== 'success') return put(main, ...messages(r));
  const types = Object.keys(r.data).sort();
  if (!types.length) return put(main, el('p', { class: 'muted' }, 'No store endpoints known yet.'));
  put(main, ...types.map((t) => [
    el('h3', {}, t),
    el('table', {}, el('tr', {}, ['Endpoint', 'Health', 'Labels', 'Min time', 'Max time', 'Last check'].map((h) => el('th', {}, h))),
      r.data[t].map((s) => el('tr', {},
        el('td', { class: 'mono' }, s.name),
        el('td', {}, s.lastError ? el('span', { class: 'down', title: s.lastError }, 'DOWN: ' + s.lastError) : el('span', { class: 'up' }, 'UP')),
        el('td', { class: 'mono' }, (s.labelSets || []).map((l) => el('div', {}, labelText(l)))),
        el('td', {}, fmtMs(s.minTime)), el('td', {}, fmtMs(s.maxTime)), el('td', {}, s.lastCheck)))),
  ]).flat());
}

// ---- /rules and /alerts ----

async function rulesPage(main) {
  const r = await api('/api/v1/rules');
  if (r.status !== 'success') return put(main, ...messages(r));
  const groups = r.data.groups || [];
  if (!groups.length) return put(main, el('p', { class: 'muted' }, 'No rule groups loaded.'));
  put(main, ...groups.map((g) => [
    el('h3', {}, g.name + ' ', el('span', { class: 'muted' }, g.file + ', every ' + g.interval + 's')),
    el('table', {}, el('tr', {}, ['Rule', 'Query', 'Health', 'Last evaluation', 'Took (s)'].map((h) => el('th', {}, h))),
      g.rules.map((x) => el('tr', {},
        el('td', {}, (x.type === 'alerting' ? 'alert: ' : 'record: ') + x.name),
        el('td', { class: 'mono' }, x.query),
        el('td', {}, el('span', { class: x.health === 'ok' ? 'up' : (x.health === 'err' ? 'down' : 'muted') }, x.health),
          x.lastError ? el('div', { class: 'err' }, x.lastError) : null),
        el('td', {}, x.lastEvaluation), el('td', { class: 'num' }, String(x.evaluationTime))))),
  ]).flat());
}

async function alertsPage(main) {
  const r = await api('/api/v1/alerts');
  if (r.status !== 'success') return put(main, ...messages(r));
  const alerts = r.data.alerts || [];
  if (!alerts.length) return put(main, el('p', { class: 'muted' }, 'No pending or firing alerts.'));
  put(main, el('table', {},
    el('tr', {}, ['State', 'Alert', 'Active since', 'Value', 'Annotations'].map((h) => el('th', {}, h))),
    alerts.map((a) => el('tr', {},
      el('td', { class: a.state }, a.state),
      el('td', { class: 'mono' }, labelText(Object.assign({ __name__: a.labels.alertname }, a.labels))),
      el('td', {}, a.activeAt), el('td', { class: 'num' }, a.value),
      el('td', {}, Object.entries(a.annotations || {}).map(([k, v]) => el('div', {}, k + ': ' + v)))))));
}

function start() {
  const rules = document.body.dataset.rules === 'true';
  for (const a of document.querySelectorAll('.rules-only')) if (!rules) a.remove();
  const pages = { '/graph': graphPage, '/stores': storesPage, '/rules': rulesPage, '/alerts': alertsPage };
  const page = pages[location.pathname] || graphPage;
  for (const a of document.querySelectorAll('nav a')) if (a.getAttribute('href') === location.pathname) a.classList.add('active');
  page(document.getElementById('main'));
}

start();
