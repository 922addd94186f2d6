import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, test } from 'node:test';
import { init, Observer, replay } from '../../src/api.js';
import { installDom } from './dom.js';
import type { Dom } from './dom.js';

let dom: Dom;
afterEach(async () => {
  await Observer.shutdown();
  await dom.close();
});

const capture = (lines: unknown[][]) => {
  const orig = console.log;
  console.log = (...a: unknown[]) => void lines.push(a);
  return () => (console.log = orig);
};

test('init returns the running instance on a second call; with other options it says so in debug mode', () => {
  dom = installDom();
  const lines: unknown[][] = [];
  const restore = capture(lines);
  try {
    const a = init({ apiKey: 'k', endpoint: 'https://api.test', debug: true });
    assert.equal(init({ apiKey: 'k', endpoint: 'https://api.test', debug: true }), a);
    assert.ok(!lines.some((l) => String(l[1]).includes('other options')), 'same options: no warning');
    assert.equal(init({ apiKey: 'k', endpoint: 'https://api.test', debug: true, sampleRate: 0.5 }), a);
    assert.ok(lines.some((l) => String(l[1]).includes('other options')));
  } finally {
    restore();
  }
});

test('no console output at all without debug', () => {
  dom = installDom();
  const lines: unknown[][] = [];
  const restore = capture(lines);
  try {
    init({ apiKey: 'k', endpoint: 'https://api.test' });
    init({ apiKey: 'k', endpoint: 'https://api.test', sampleRate: 0.1 });
    init({} as never);
  } finally {
    restore();
  }
  assert.deepEqual(lines, []);
});

test('init without apiKey/endpoint never throws: a no-op instance whose methods all work', async () => {
  dom = installDom();
  const obs = init({} as never);
  obs.track('x');
  obs.captureException(new Error('e'));
  await obs.flush();
  await obs.shutdown();
  assert.deepEqual(obs.stats(), { queued: 0, sent: 0, retries: 0, dropped: {} });
});

test('the snippet queue: calls made before the script loaded are replayed in order, init first', () => {
  dom = installDom();
  const seen: string[] = [];
  replay([
    ['init', [{ apiKey: 'k', endpoint: 'https://api.test', beforeSend: (e: { type: string; name?: string }) => (seen.push(e.name || e.type), e) }]],
    ['track', ['before_load', { a: 1 }]],
    ['setProperties', [{ plan: 'pro' }]],
    ['track', ['second']],
    ['nonsense', []],
  ]);
  assert.deepEqual(seen, ['page_view', 'before_load', 'second']);
});

test('window.Observer forwards every method to the running instance', () => {
  dom = installDom();
  const names: string[] = [];
  init({ apiKey: 'k', endpoint: 'https://api.test', beforeSend: (e) => (names.push(e.name || e.type), e) });
  Observer.track('via_global');
  Observer.captureException(new Error('caught'));
  assert.deepEqual(names, ['page_view', 'via_global', 'error']);
});

/** sdk/README.md, read from the SDK's directory (npm test runs in sdk/). */
const readme = () => readFileSync(new URL('README.md', `file://${process.cwd()}/`), 'utf8');

/** The methods the README's instance table documents (it says `window.Observer` forwards each). */
function documentedMethods(): string[] {
  const text = readme();
  const section = text.slice(text.indexOf('## Instance'), text.indexOf('\n## ', text.indexOf('## Instance') + 1));
  const names = new Set<string>();
  for (const line of section.split('\n').filter((l) => l.startsWith('| `'))) for (const m of line.split('|')[1].matchAll(/`(\w+)\(/g)) names.add(m[1]);
  return [...names];
}

const ZERO = { queued: 0, sent: 0, retries: 0, dropped: {} };

test('window.Observer has every method the README documents, the getters included: idle answers before init, live values after', async () => {
  dom = installDom();
  const methods = documentedMethods();
  assert.ok(['track', 'flush', 'getSessionId', 'getAnonymousId', 'stats'].every((m) => methods.includes(m)), methods.join());
  const O = Observer as unknown as Record<string, unknown>;
  assert.deepEqual(methods.filter((m) => typeof O[m] !== 'function'), [], 'documented but missing on window.Observer');
  assert.equal(Observer.getSessionId(), '');
  assert.equal(Observer.getAnonymousId(), '');
  assert.deepEqual(Observer.stats(), ZERO);

  const obs = init({ apiKey: 'k', endpoint: 'https://api.test' });
  Observer.track('counted');
  assert.match(Observer.getSessionId(), /\S/);
  assert.equal(Observer.getSessionId(), obs.getSessionId());
  assert.match(Observer.getAnonymousId(), /\S/);
  assert.equal(Observer.getAnonymousId(), obs.getAnonymousId());
  assert.deepEqual(Observer.stats(), obs.stats());
  assert.equal(Observer.stats().queued, 2, 'the page view and the custom event');

  await Observer.shutdown();
  assert.equal(Observer.getSessionId(), '', 'after shutdown: as before init');
  assert.deepEqual(Observer.stats(), ZERO);
});

test('the README loader snippet: idle getters and promises before the script, the same object live after it', async () => {
  dom = installDom();
  const snippet = /!function \(w\)[\s\S]*?\}\(window\);/.exec(readme());
  assert.ok(snippet, 'no loader snippet in README.md');
  new Function('window', snippet[0])(window);
  const w = window as unknown as { Observer: Record<string, (...a: unknown[]) => unknown> & { q?: unknown[] } };
  const kept = w.Observer;
  assert.equal(kept.getSessionId(), '');
  assert.equal(kept.getAnonymousId(), '');
  assert.deepEqual(kept.stats(), ZERO);
  const names: string[] = [];
  const started = kept.init({ apiKey: 'k', endpoint: 'https://api.test', beforeSend: (e: { type: string; name?: string }) => (names.push(e.name || e.type), e) });
  kept.track('queued_before_load');
  const flushed = kept.flush();
  assert.ok(started instanceof Promise && flushed instanceof Promise);
  assert.equal(kept.q?.length, 3);

  await import('../../src/global.js');
  assert.equal(w.Observer, kept, 'the stub became the real object in place');
  assert.ok(!('q' in kept));
  const obs = (await started) as { getSessionId(): string; getAnonymousId(): string; stats(): unknown };
  assert.equal(typeof obs.getSessionId, 'function', 'init resolved with the instance');
  await flushed;
  assert.deepEqual(names, ['page_view', 'queued_before_load']);
  assert.equal(dom.requests.length, 1, 'the replayed flush sent before its promise settled');
  assert.match(kept.getSessionId() as string, /\S/);
  assert.equal(kept.getSessionId(), obs.getSessionId());
  assert.equal(kept.getAnonymousId(), obs.getAnonymousId());
  assert.deepEqual(kept.stats(), obs.stats());
  assert.equal((kept.stats() as { sent: number }).sent, 2);
});
