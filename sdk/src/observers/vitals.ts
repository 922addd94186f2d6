import type { Ctx } from '../context';

type Entry = PerformanceEntry & { value?: number; hadRecentInput?: boolean; interactionId?: number; responseStart?: number };

/**
 * Web vitals, small: LCP, CLS (sum of shifts without recent input), INP-lite (slowest
 * interaction), FCP and TTFB, reported once as `web_vital` events when the page is hidden.
 */
export function observeVitals(ctx: Ctx): void {
  const PO = typeof PerformanceObserver !== 'undefined' ? PerformanceObserver : null;
  if (!PO) return;
  const v: Record<string, number> = {};
  const watch = (type: string, fn: (e: Entry) => void, extra?: object) => {
    try {
      const o = new PO((list) => list.getEntries().forEach((e) => fn(e as Entry)));
      o.observe({ type, buffered: true, ...extra } as PerformanceObserverInit);
      ctx.t.add(() => o.disconnect());
    } catch { /* entry type not supported */ }
  };
  watch('largest-contentful-paint', (e) => (v.LCP = e.startTime));
  watch('layout-shift', (e) => {
    if (!e.hadRecentInput) v.CLS = (v.CLS || 0) + (e.value || 0);
  });
  watch('event', (e) => {
    if (e.interactionId) v.INP = Math.max(v.INP || 0, e.duration);
  }, { durationThreshold: 40 });
  watch('paint', (e) => {
    if (e.name === 'first-contentful-paint') v.FCP = e.startTime;
  });
  watch('navigation', (e) => {
    if (e.responseStart) v.TTFB = e.responseStart;
  });
  let sent = false;
  ctx.onHide(() => {
    if (sent) return;
    sent = true;
    for (const name in v) ctx.emit('web_vital', { name, value: name === 'CLS' ? Math.round(v[name] * 1e4) / 1e4 : Math.round(v[name]) }, name);
  });
}
