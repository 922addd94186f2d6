import assert from 'node:assert/strict';
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
