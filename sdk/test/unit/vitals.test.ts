import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import type { Ctx } from '../../src/context.js';
import { observeVitals } from '../../src/observers/vitals.js';
import { Teardown } from '../../src/teardown.js';
import type { Metadata } from '../../src/types.js';
import { installDom, tick } from './dom.js';
import type { Dom } from './dom.js';

let dom: Dom;
afterEach(() => dom.close());

/** Entries the fake PerformanceObserver hands out, by type (what Chromium would report). */
type Entry = Record<string, unknown> & { entryType: string; startTime: number };
function fakePerformance(entries: Entry[]) {
  class PO {
    static supportedEntryTypes = ['paint', 'largest-contentful-paint', 'layout-shift', 'event', 'first-input', 'navigation'];
    constructor(private readonly cb: (list: { getEntries(): Entry[] }) => void) {}
    observe(o: { type: string }) {
      // One callback per entry, as Chromium reports shifts frame by frame.
      for (const e of entries.filter((x) => x.entryType === o.type)) queueMicrotask(() => this.cb({ getEntries: () => [e] }));
    }
    disconnect() {}
    takeRecords() {
      return [];
    }
  }
  const g = globalThis as unknown as Record<string, unknown>;
  g.PerformanceObserver = PO;
  (window as unknown as Record<string, unknown>).PerformanceObserver = PO;
  const nav = { entryType: 'navigation', name: location.href, startTime: 0, responseStart: 120, activationStart: 0, type: 'navigate' };
  const perf = globalThis.performance as unknown as Record<string, unknown>;
  perf.getEntriesByType = (t: string) => (t === 'navigation' ? [nav] : []);
}

test('web vitals by their definitions: CLS is the largest session window, not the page-life sum; reported on hide', async () => {
  dom = installDom();
  fakePerformance([
    { entryType: 'paint', name: 'first-contentful-paint', startTime: 300 },
    // Window 1: 0.1 + 0.1 within 1 s of each other; window 2 (5 s later): 0.15. Sum 0.35, CLS 0.2.
    { entryType: 'layout-shift', startTime: 1000, value: 0.1, hadRecentInput: false },
    { entryType: 'layout-shift', startTime: 1500, value: 0.1, hadRecentInput: false },
    { entryType: 'layout-shift', startTime: 8000, value: 0.15, hadRecentInput: false },
    { entryType: 'layout-shift', startTime: 8100, value: 0.5, hadRecentInput: true },
  ]);
  const events: Array<{ name?: string; md: Metadata }> = [];
  const ctx: Ctx = {
    cfg: resolveConfig({ apiKey: 'k', endpoint: 'e' }),
    t: new Teardown(),
    now: Date.now,
    emit: (_type, md, name) => void events.push({ name, md }),
    drop: () => {},
    lastClick: { t: 0, selector: '' },
  };
  observeVitals(ctx);
  await tick(5);
  Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
  document.dispatchEvent(new Event('visibilitychange'));
  window.dispatchEvent(new Event('pagehide'));
  await tick(5);
  const byName = Object.fromEntries(events.map((e) => [e.name, e.md]));
  assert.equal(byName.CLS?.value, 0.2, JSON.stringify(events));
  assert.equal(byName.FCP?.value, 300);
  assert.ok(typeof byName.CLS.metric_id === 'string' && byName.CLS.rating === 'needs-improvement');
});
