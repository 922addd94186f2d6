import assert from 'node:assert/strict';
import { afterEach, mock, test } from 'node:test';
import { ADOPT_MS, Client } from '../../src/client.js';
import { QUEUE_PREFIX } from '../../src/store.js';
import type { ObserverEvent, ObserverOptions } from '../../src/types.js';
import { installDom, tick } from './dom.js';
import type { Dom } from './dom.js';

let dom: Dom;
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.shutdown();
  await dom.close();
});

function start(opts: Partial<ObserverOptions> = {}, url?: string) {
  dom = dom && !url ? dom : installDom(url);
  const seen: ObserverEvent[] = [];
  const c = new Client({ apiKey: 'k', endpoint: 'https://api.test', flushInterval: 100, beforeSend: (e) => (seen.push(e), e), ...opts });
  clients.push(c);
  return { c, seen };
}
/** A `pageshow` with `persisted: true` (happy-dom's PageTransitionEvent ignores the init). */
const restoredFromBfcache = () => Object.defineProperty(new Event('pageshow'), 'persisted', { value: true });
const storedKeys = () => Object.keys(localStorage).sort();
const sentIds = () => dom.requests.flatMap((r) => r.body.events.map((e) => e.event_id));

test('a page view at start, carrying release and global properties; delivered and then removed from storage', async () => {
  dom = installDom();
  const { c, seen } = start({ release: 'web@1.2.3', properties: { plan: 'pro' } });
  assert.equal(seen[0].type, 'page_view');
  assert.equal(seen[0].metadata.release, 'web@1.2.3');
  assert.equal(seen[0].metadata.plan, 'pro');
  await tick(5);
  c.track('signup', { step: 1 });
  await c.flush();
  assert.deepEqual(sentIds(), seen.map((e) => e.event_id));
  await tick(1100);
  assert.equal(storedKeys().filter((k) => k.startsWith(QUEUE_PREFIX)).length, 0, 'nothing left once the server took it');
});

test('events stay persisted until a 2xx: a 503 keeps them, and a new page load adopts and resends the same batch', async () => {
  dom = installDom();
  dom.answer = 503;
  const { c, seen } = start();
  c.track('a');
  c.track('b');
  await tick(5);
  await c.flush();
  const first = dom.requests[0].body.events.map((e) => e.event_id);
  window.dispatchEvent(new Event('pagehide'));
  const keys = storedKeys().filter((k) => k.startsWith(QUEUE_PREFIX));
  assert.equal(keys.length, 1);
  assert.deepEqual(JSON.parse(localStorage.getItem(keys[0]) as string).b[0].map((e: ObserverEvent) => e.event_id), first, 'frozen batch stored');
  await c.shutdown();
  delete (globalThis as Record<string, unknown>).__observer_instance__;
  dom.answer = 202;
  dom.requests = [];
  const next = start();
  await tick(20);
  await next.c.flush();
  assert.deepEqual(dom.requests[0].body.events.map((e) => e.event_id), first, 'same events, same order');
  assert.ok(seen.every((e) => sentIds().includes(e.event_id)));
});

test("a tab still closing when this page starts: its queue is adopted at the next look once its lock is free", async () => {
  dom = installDom();
  const closing = QUEUE_PREFIX + 'closing-tab';
  const ev = (id: string) => ({ event_id: id, type: 'custom', name: 'n', timestamp: Date.now(), session_id: 's', url: 'https://shop.test/', metadata: {} });
  localStorage.setItem(closing, JSON.stringify({ t: Date.now(), b: [[ev('c1'), ev('c2')]], e: [] }));
  dom.locks.held.add(closing); // its page is going away, its lock not yet released
  mock.timers.enable({ apis: ['setInterval'] });
  try {
    const { c } = start({ capture: { clicks: false, errors: false, network: false, navigation: false, pageViews: false } });
    await tick(20);
    await c.flush();
    assert.ok(!sentIds().includes('c1'), 'held at start: left alone');
    assert.ok(localStorage.getItem(closing));
    dom.locks.release(closing); // the page is gone
    mock.timers.tick(ADOPT_MS);
    await tick(20);
    await c.flush();
    assert.deepEqual(dom.requests.map((r) => r.body.events.map((e) => e.event_id)).find((ids) => ids.includes('c1')), ['c1', 'c2'], 'the frozen batch, as it was');
    assert.equal(localStorage.getItem(closing), null);
  } finally {
    mock.timers.reset();
  }
  assert.ok(ADOPT_MS <= 5000, 'a closed tab waits seconds, not half a minute');
});

test('DNT/GPC: nothing stored and nothing sent; optIn starts capture', async () => {
  dom = installDom();
  Object.defineProperty(navigator, 'doNotTrack', { value: '1', configurable: true });
  const { c, seen } = start();
  c.track('x');
  await tick(200);
  assert.deepEqual(storedKeys(), []);
  assert.equal(dom.requests.length, 0);
  assert.equal(c.getAnonymousId(), '');
  c.optIn();
  c.track('after');
  assert.deepEqual(seen.map((e) => e.type), ['page_view', 'custom']);
  assert.equal(localStorage.getItem('__observer_consent'), 'in');
});

test('defaultOptOut: only the consent flag is ever written, and only by optIn/optOut', async () => {
  dom = installDom();
  const { c } = start({ defaultOptOut: true });
  c.track('x');
  await tick(200);
  assert.deepEqual(storedKeys(), []);
  c.optOut();
  assert.deepEqual(storedKeys(), ['__observer_consent']);
});

test('an opt-out in another tab (a storage event) stops this tab and purges every stored queue', async () => {
  dom = installDom();
  dom.answer = 503;
  const { c, seen } = start();
  c.track('queued');
  await tick(1100);
  assert.ok(storedKeys().some((k) => k.startsWith(QUEUE_PREFIX)));
  localStorage.setItem('__observer_queue_of_other_tab', 'x'); // not ours: left alone
  localStorage.setItem(QUEUE_PREFIX + 'other-tab', '{"t":1,"b":[],"e":[]}');
  localStorage.setItem('__observer_consent', 'out');
  window.dispatchEvent(new StorageEvent('storage', { key: '__observer_consent', newValue: 'out' }));
  const n = seen.length;
  c.track('after');
  assert.equal(seen.length, n, 'nothing captured after');
  assert.deepEqual(storedKeys(), ['__observer_consent', '__observer_queue_of_other_tab']);
  assert.equal(c.stats().queued, 0);
});

test('the store stays within 256 KB across tabs: other tabs\' queues shrink what this one may keep', async () => {
  dom = installDom();
  dom.answer = 503;
  localStorage.setItem(QUEUE_PREFIX + 'busy-tab', '{"t":1,"b":[],"e":[' + '"' + 'x'.repeat(250 * 1024) + '"' + ']}');
  dom.locks.held.add(QUEUE_PREFIX + 'busy-tab'); // its owner is alive
  const { c } = start({ capture: { clicks: false, errors: false, network: false, navigation: false, pageViews: false } });
  for (let i = 0; i < 50; i++) c.track('big', { blob: 'y'.repeat(1500) });
  window.dispatchEvent(new Event('pagehide'));
  const total = Object.keys(localStorage).filter((k) => k.startsWith(QUEUE_PREFIX)).reduce((n, k) => n + k.length + (localStorage.getItem(k) as string).length, 0);
  assert.ok(total <= 256 * 1024, String(total));
  assert.ok((c.stats().dropped.store_full || 0) > 0, 'drops are counted: ' + JSON.stringify([c.stats(), total, Object.keys(localStorage)]));
});

test('captureException reports caught errors once per fingerprint; setProperties reaches later events', () => {
  dom = installDom();
  const { c, seen } = start();
  c.setProperties({ tier: 'gold' });
  for (let i = 0; i < 5; i++) c.captureException(new TypeError('boundary caught'), { component: 'Cart' });
  const errs = seen.filter((e) => e.type === 'error');
  assert.equal(errs.length, 1);
  assert.equal(errs[0].metadata.kind, 'captured');
  assert.equal(errs[0].metadata.error_type, 'TypeError');
  assert.equal(errs[0].metadata.component, 'Cart');
  assert.equal(errs[0].metadata.tier, 'gold');
  assert.equal(c.stats().dropped.error_repeat, 4);
});

test('track() names are masked like everything else', () => {
  dom = installDom();
  const { c, seen } = start();
  c.track('mail sent to jane@example.com', {});
  assert.equal(seen[1].name, 'mail sent to [email]');
});

test('shutdown() stops capture at once and settles after the final flush', async () => {
  dom = installDom();
  const { c, seen } = start();
  c.track('last');
  const p = c.shutdown();
  c.track('after');
  assert.equal(seen.length, 2);
  await p;
  assert.deepEqual(sentIds(), seen.map((e) => e.event_id));
});

test('the page URL is sanitized once per distinct URL, and cut to 2,000 characters', () => {
  dom = installDom('https://shop.test/p?token=secret&x=' + 'a'.repeat(50000));
  const { c, seen } = start();
  c.track('a');
  assert.ok(seen.every((e) => e.url.length <= 2001 && e.url.includes('token=[redacted]')));
});

test('a prerendered page captures nothing (no page view) until it is activated', async () => {
  dom = installDom();
  Object.defineProperty(document, 'prerendering', { value: true, configurable: true });
  const { c, seen } = start();
  c.track('while_prerendering');
  assert.equal(seen.length, 0);
  assert.deepEqual(storedKeys(), []);
  Object.defineProperty(document, 'prerendering', { value: false, configurable: true });
  document.dispatchEvent(new Event('prerenderingchange'));
  assert.deepEqual(seen.map((e) => e.type), ['page_view']);
});

test('back from the bfcache: the lock is taken again and a queue adopted meanwhile is not sent twice', async () => {
  dom = installDom();
  dom.answer = 503;
  const { c } = start();
  c.track('before_bfcache');
  await tick(5);
  window.dispatchEvent(new Event('pagehide')); // saved, lock released: the page may be frozen now
  await tick(1);
  const key = Object.keys(localStorage).find((k) => k.startsWith(QUEUE_PREFIX)) as string;
  assert.ok(key && !dom.locks.held.has(key));
  localStorage.removeItem(key); // another tab adopted it while this page was frozen
  dom.answer = 202;
  dom.requests = [];
  window.dispatchEvent(restoredFromBfcache());
  await tick(5);
  await c.flush();
  assert.equal(c.stats().queued, 0, 'storage says the queue is no longer ours');
  assert.deepEqual(sentIds(), [], 'nothing resent by this page');
  c.track('after_restore');
  await tick(1100); // the backoff after the 503 of the hide flush
  await c.flush();
  assert.equal(dom.requests.length, 1);
  assert.deepEqual(dom.requests[0].body.events.map((e) => e.name), ['after_restore']);
  assert.ok([...dom.locks.held].some((k) => k.startsWith(QUEUE_PREFIX)), 'a lock is held again');
});

test('back from the bfcache after an opt-out in another tab: capture stops and storage is purged', () => {
  dom = installDom();
  const { c, seen } = start();
  window.dispatchEvent(new Event('pagehide'));
  localStorage.setItem('__observer_consent', 'out'); // no storage event reaches a frozen page
  window.dispatchEvent(restoredFromBfcache());
  const n = seen.length;
  c.track('after');
  assert.equal(seen.length, n);
  assert.deepEqual(storedKeys(), ['__observer_consent']);
});

test("stored events older than the server's dedup window are dropped, not resent, even when dedupWindow asks for 30 days", async () => {
  const DAY = 86400000;
  dom = installDom();
  dom.answer = 503;
  const { c } = start();
  c.track('old_a');
  c.track('old_b');
  await tick(5);
  await c.flush();
  window.dispatchEvent(new Event('pagehide'));
  const [key] = storedKeys().filter((k) => k.startsWith(QUEUE_PREFIX));
  const old = (JSON.parse(localStorage.getItem(key) as string).b[0] as ObserverEvent[]).map((e) => e.event_id);
  await c.shutdown();
  delete (globalThis as Record<string, unknown>).__observer_instance__;
  // The stored batch as a tab closed two days ago left it: past the server's one-day DEDUP_WINDOW.
  localStorage.setItem(key, (localStorage.getItem(key) as string).replace(/"timestamp":(\d+)/g, (_, t) => `"timestamp":${Number(t) - 2 * DAY}`));
  dom.answer = 202;
  dom.requests = [];
  const next = start({ dedupWindow: 30 * DAY });
  await tick(20);
  await next.c.flush();
  assert.ok(old.length >= 2);
  assert.ok(dom.requests.length >= 1, 'the new page view was sent');
  assert.deepEqual(sentIds().filter((id) => old.includes(id)), [], 'a resend after the server forgot the ids would be stored twice');
  assert.equal(next.c.stats().dropped.expired, old.length);
});
