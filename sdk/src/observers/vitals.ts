import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals';
import type { Metric } from 'web-vitals';
import type { Ctx } from '../context.js';

/**
 * Web vitals by their definitions, from GoogleChrome's web-vitals library (full builds only):
 * CLS over session windows, INP as the 98th-percentile interaction, LCP until input; each is
 * reported when the page is hidden (again after a back/forward-cache restore, with a new
 * metric id), times measured from activation for prerendered pages.
 */
export function observeVitals(ctx: Ctx): void {
  const report = (m: Metric) =>
    ctx.emit('web_vital', {
      value: m.name === 'CLS' ? Math.round(m.value * 1e4) / 1e4 : Math.round(m.value),
      delta: m.name === 'CLS' ? Math.round(m.delta * 1e4) / 1e4 : Math.round(m.delta),
      rating: m.rating,
      metric_id: m.id,
      navigation_type: m.navigationType,
    }, m.name);
  for (const on of [onCLS, onINP, onLCP, onFCP, onTTFB]) on(report);
}
