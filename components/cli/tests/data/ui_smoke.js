// Runs the UI script (app.js) in node against a live server with a minimal DOM stand-in, and
// prints what the page drew as JSON: {errors, warnings, rows, lines, text}.
// Usage: node ui_smoke.js BASE_URL APP_JS PATHNAME SEARCH
'use strict';
const fs = require('fs');
const vm = require('vm');

const [base, script, pathname, search] = process.argv.slice(2);

class FakeNode {
  constructor(tag) {
    this.tag = tag;
    this.children = [];
    this.attrs = {};
    this.dataset = {};
    this.classList = { add: (c) => { this.attrs.class = ((this.attrs.class || '') + ' ' + c).trim(); } };
  }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  addEventListener() {}
  // As the DOM does, anything but a node (null too) is appended as its string.
  append(...cs) { for (const c of cs) this.children.push(c instanceof FakeNode ? c : { tag: '#text', text: String(c), children: [], attrs: {} }); }
  replaceChildren(...cs) { this.children = []; this.append(...cs); }
  remove() {}
  set textContent(t) { this.children = [{ tag: '#text', text: String(t), children: [], attrs: {} }]; }
  get checked() { return 'checked' in this.attrs; }
  get value() { return this._value !== undefined ? this._value : (this.attrs.value || ''); }
  set value(v) { this._value = v; }
}

const main = new FakeNode('main');
let pending = 0;
let requests = 0;
globalThis.document = {
  createElement: (t) => new FakeNode(t),
  createElementNS: (_ns, t) => new FakeNode(t),
  getElementById: () => main,
  querySelectorAll: () => [],
  body: { dataset: { rules: 'true' } },
};
globalThis.location = { pathname, search };
globalThis.history = { replaceState() {} };
const realFetch = globalThis.fetch;
globalThis.fetch = async (url) => {
  pending++;
  requests++;
  try {
    const r = await realFetch(base + url);
    const text = await r.text();
    return { status: r.status, json: async () => JSON.parse(text) };
  } finally {
    pending--;
  }
};

function walk(n, out) {
  const cls = (n.attrs && n.attrs.class) || '';
  if (n.tag === '#text') out.text.push(n.text);
  if (cls.split(' ').includes('err')) out.errors.push(textOf(n));
  if (cls.split(' ').includes('warn')) out.warnings.push(textOf(n));
  if (n.tag === 'tr') out.rows++;
  if (n.tag === 'path' && /L/.test(n.attrs.d || '')) out.lines++;
  for (const c of n.children) walk(c, out);
  return out;
}
function textOf(n) { return n.tag === '#text' ? n.text : n.children.map(textOf).join(''); }

vm.runInThisContext(fs.readFileSync(script, 'utf8'), { filename: script });

// Report once the page has made its requests and they have all been answered for a while.
let idle = 0;
const timer = setInterval(() => {
  idle = requests > 0 && pending === 0 ? idle + 1 : 0;
  if (idle < 10) return;
  clearInterval(timer);
  const out = walk(main, { text: [], errors: [], warnings: [], rows: 0, lines: 0 });
  out.text = out.text.join(' ');
  process.stdout.write(JSON.stringify(out) + '\n');
}, 20);
