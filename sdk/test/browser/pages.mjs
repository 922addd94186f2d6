// HTML and scripts the browser test serves from its own origin.
import { readFileSync } from 'node:fs';

/** The test page: loads the SDK twice on purpose (a second load must not double-capture). */
export function testPage({ build, withCounter }) {
  const sdk = build === 'full' ? '/observer.full.min.js' : '/observer.min.js';
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Observer browser test</title></head>
<body>
  <h1>Observer browser test</h1>
  <button id="buy" class="btn primary">Buy now</button>
  <button id="rage" class="btn">Rage me</button>
  <button id="boom" onclick="throw new Error('boom from the test page')">Throw</button>
  <div data-observer-ignore><button id="secret-btn">Secret area 4111 1111 1111 1111</button></div>
  <form onsubmit="return false">
    <label>Password <input id="pw" type="password" autocomplete="off"></label>
    <label>Name <input id="name" type="text" autocomplete="off"></label>
  </form>
  ${withCounter ? '<script src="/listener-count.js"></script>' : ''}
  <script>window.__captured = [];</script>
  <script src="${sdk}"></script>
  <script src="${sdk}"></script>
</body></html>`;
}

/** Counts live listeners by wrapping EventTarget.prototype.add/removeEventListener before the SDK loads. */
export const LISTENER_COUNTER = `(() => {
  const P = EventTarget.prototype, add = P.addEventListener, rem = P.removeEventListener;
  const live = new Map();
  const cap = (o) => typeof o === 'boolean' ? o : !!(o && o.capture);
  let targets = new WeakMap(), nextId = 1;
  const tid = (t) => { if (!targets.has(t)) targets.set(t, nextId++); return targets.get(t); };
  const fids = new WeakMap();
  const fid = (f) => { if (typeof f !== 'function' && typeof f !== 'object') return 0; if (!fids.has(f)) fids.set(f, nextId++); return fids.get(f); };
  P.addEventListener = function (type, fn, opts) {
    // Attributed to the SDK by the script on the stack (the test harness adds listeners of its own).
    const sdk = /observer(\.full)?\.min\.js/.test(String(new Error().stack));
    if (fn) live.set(tid(this) + '|' + type + '|' + fid(fn) + '|' + cap(opts), { type, sdk, target: this === window ? 'window' : this === document ? 'document' : String(this) });
    return add.call(this, type, fn, opts);
  };
  P.removeEventListener = function (type, fn, opts) {
    if (fn) live.delete(tid(this) + '|' + type + '|' + fid(fn) + '|' + cap(opts));
    return rem.call(this, type, fn, opts);
  };
  window.__listeners = { count: () => live.size, sdk: () => Array.from(live.values()).filter((l) => l.sdk).length, list: () => Array.from(live.values()) };
  window.__orig = {
    fetch: window.fetch,
    open: XMLHttpRequest.prototype.open,
    send: XMLHttpRequest.prototype.send,
    pushState: history.pushState,
    replaceState: history.replaceState,
  };
})();`;

/** Another library that wraps fetch and XHR open/send after the SDK did (as Sentry, Datadog etc. do). */
export const OTHER_WRAPPER = `(() => {
  const calls = { fetch: 0, open: 0, send: 0 };
  const f = window.fetch;
  const X = XMLHttpRequest.prototype, open = X.open, send = X.send;
  const fetchWrapper = function () { calls.fetch++; return f.apply(this, arguments); };
  const openWrapper = function () { calls.open++; return open.apply(this, arguments); };
  const sendWrapper = function () { calls.send++; return send.apply(this, arguments); };
  window.fetch = fetchWrapper; X.open = openWrapper; X.send = sendWrapper;
  window.__other = { calls, fetchWrapper, openWrapper, sendWrapper };
})();`;

/** A page that starts the SDK on load, as a site does, with the options an init script left in `window.__obsOptions`. */
export function autoPage(build) {
  const sdk = build === 'full' ? '/observer.full.min.js' : '/observer.min.js';
  const rows = Array.from({ length: 1000 }, (_, i) => `<li class="row r${i % 7}"><span>Item ${i}</span> <button class="add" data-i="${i}">Add</button></li>`).join('');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Observer auto page</title></head>
<body>
  <h1>Shop</h1>
  <button id="buy" class="btn primary">Buy now</button>
  <div class="card"><h3>Jane Doe</h3><p>born 1990-04-12 · SSN 078-05-1120 · 555-867-5309</p></div>
  <ul id="list">${rows}</ul>
  <script src="${sdk}"></script>
  <script>window.obs = window.Observer.init(window.__obsOptions || {});</script>
</body></html>`;
}

const README = new URL('../../README.md', import.meta.url);

/** The loader snippet exactly as sdk/README.md documents it. */
export function readmeSnippet() {
  const m = /!function \(w\)[\s\S]*?\}\(window\);/.exec(readFileSync(README, 'utf8'));
  if (!m) throw new Error('no loader snippet in sdk/README.md');
  return m[0];
}

/** The methods sdk/README.md's instance table documents (`window.Observer` forwards each). */
export function documentedMethods() {
  const text = readFileSync(README, 'utf8');
  const start = text.indexOf('## Instance');
  const section = text.slice(start, text.indexOf('\n## ', start + 1));
  const names = new Set();
  for (const line of section.split('\n').filter((l) => l.startsWith('| `'))) for (const m of line.split('|')[1].matchAll(/`(\w+)\(/g)) names.add(m[1]);
  return [...names];
}

/** A site that installs the SDK with the README's loader snippet and an async script tag. */
export function snippetPage(build) {
  const sdk = build === 'full' ? '/observer.full.min.js' : '/observer.min.js';
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Observer snippet page</title>
<script>${readmeSnippet()}</script>
<script async src="${sdk}"></script>
</head>
<body><h1>Snippet</h1><button id="buy" class="btn primary">Buy now</button></body></html>`;
}
