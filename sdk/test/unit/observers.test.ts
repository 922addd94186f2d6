import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import type { Ctx } from '../../src/context.js';
import { observeClicks } from '../../src/observers/clicks.js';
import { errorReporter, observeErrors } from '../../src/observers/errors.js';
import { observeNavigation } from '../../src/observers/navigation.js';
import { observeNetwork } from '../../src/observers/network.js';
import { observePageViews } from '../../src/observers/pageview.js';
import { Teardown } from '../../src/teardown.js';
import type { Metadata, ObserverOptions } from '../../src/types.js';
import { installDom, tick } from './dom.js';
import type { Dom } from './dom.js';

let dom: Dom;
let t: Teardown;
afterEach(async () => {
  t.run();
  await dom.close();
});

function ctx(opts: Partial<ObserverOptions> = {}, url?: string) {
  dom = installDom(url);
  t = new Teardown();
  const events: Array<{ type: string; md: Metadata }> = [];
  const dropped: Record<string, number> = {};
  let now = 1_700_000_000_000;
  const c: Ctx = {
    cfg: resolveConfig({ apiKey: 'k', endpoint: 'https://api.test', ...opts }),
    t,
    now: () => now,
    emit: (type, md) => void events.push({ type, md }),
    drop: (r, n) => void (dropped[r] = (dropped[r] || 0) + n),
    lastClick: { t: 0, selector: '' },
  };
  return { c, events, dropped, advance: (ms: number) => (now += ms) };
}

const click = (el: Element, x = 10, y = 10) => el.dispatchEvent(new MouseEvent('click', { bubbles: true, clientX: x, clientY: y, detail: 1 }));

test('clicks: selector and label; synthetic clicks (el.click, dispatchEvent) are never rage clicks', () => {
  const { c, events } = ctx();
  document.body.innerHTML = '<button id="b">Buy</button>';
  observeClicks(c);
  const b = document.getElementById('b') as HTMLElement;
  for (let i = 0; i < 5; i++) click(b);
  for (let i = 0; i < 5; i++) b.click();
  assert.equal(events.filter((e) => e.type === 'click').length, 10);
  assert.equal(events.filter((e) => e.type === 'rage_click').length, 0, 'happy-dom events are untrusted: synthetic');
  assert.ok(events.every((e) => e.type !== 'click' || (e.md.text === 'Buy' && e.md.synthetic === true)));
});

test('errors: a storm of one error costs one event; distinct errors are rate-limited; every suppressed one is counted', () => {
  const { c, events, dropped, advance } = ctx();
  const report = errorReporter(c);
  observeErrors(c, report);
  for (let i = 0; i < 10000; i++) window.dispatchEvent(new ErrorEvent('error', { message: 'boom', filename: 'https://shop.test/app.js', lineno: 1, colno: 2, error: new Error('boom') }));
  assert.equal(events.length, 1);
  assert.equal(dropped.error_repeat, 9999);
  for (let i = 0; i < 50; i++) report('error', 'distinct ' + i, null, undefined, 'a.js', i);
  assert.equal(events.length, 10, 'a burst of 10');
  assert.equal(dropped.rate_limited, 41);
  advance(60000);
  report('error', 'later', null);
  assert.equal(events.length, 11, 'the budget refills');
});

test('errors: a rejected huge object is described within bounds, not stringified whole', () => {
  const { c, events } = ctx();
  const report = errorReporter(c);
  const huge: Record<string, unknown> = {};
  for (let i = 0; i < 100000; i++) huge['k' + i] = 'v'.repeat(50);
  report('unhandledrejection', huge, huge);
  assert.ok(String(events[0].md.message).length <= 500);
  assert.ok(JSON.stringify(events[0].md).length < 2000);
});

test('page views on path changes only by default, title read after the route rendered', async () => {
  const { c, events } = ctx({}, 'https://shop.test/list');
  document.title = 'List';
  const pv = observePageViews(c);
  observeNavigation(c, true, pv);
  for (const q of ['a', 'ab', 'abc', 'abcd', 'abcde']) history.replaceState({}, '', '/list?q=' + q);
  history.pushState({}, '', '/item/7');
  document.title = 'Item 7'; // set by the router while rendering
  await tick(350);
  const views = events.filter((e) => e.type === 'page_view');
  assert.deepEqual(views.map((e) => [e.md.path, e.md.title]), [['/list', 'List'], ['/item/7', 'Item 7']]);
  const navs = events.filter((e) => e.type === 'navigation');
  assert.equal(navs.length, 6, 'every URL change is a navigation event');
  assert.ok(navs.every((e) => !String(e.md.to).includes('abc')), 'search terms redacted');
});

test("pageViewTrigger 'url' counts query changes too; maskAllText sends no titles", async () => {
  const { c, events } = ctx({ pageViewTrigger: 'url', maskAllText: true }, 'https://shop.test/list');
  observeNavigation(c, false, observePageViews(c));
  history.pushState({}, '', '/list?page=2');
  await tick(350);
  const views = events.filter((e) => e.type === 'page_view');
  assert.equal(views.length, 2);
  assert.ok(views.every((e) => e.md.title === undefined));
});

test('network: fetch results reach the page unchanged; our own requests are never recorded', async () => {
  const { c, events } = ctx();
  observeNetwork(c);
  const r = await window.fetch('https://shop.test/api?token=abc');
  assert.equal(r.status, 202);
  await window.fetch('https://api.test/v1/events', { method: 'POST', body: '{"events":[]}' });
  await tick(5);
  assert.equal(events.length, 1);
  assert.equal(events[0].md.url, 'https://shop.test/api?token=[redacted]');
  assert.equal(events[0].md.status, 202);
});
