import type { Ctx } from '../context.js';
import { cutMask, sanitizeUrl } from '../privacy.js';

/** A route's title is read this long after its URL change at the latest (frames may not run while hidden). */
const TITLE_WAIT_MS = 300;

const path = () => sanitizeUrl(location.pathname).slice(0, 1000);

/**
 * Page views: one at start (with the referrer), then one per path change (`pageViewTrigger:
 * 'url'` counts query and hash changes too). The title is read after the route rendered:
 * after the next frame, so a router that sets `document.title` on render is seen.
 */
export function observePageViews(ctx: Ctx): (kind?: string) => void {
  const key = () => (ctx.cfg.pageViewTrigger === 'url' ? location.href : location.pathname);
  const title = () => (ctx.cfg.maskAllText ? undefined : cutMask(document.title || '', 200));
  let last = key();
  let pending: (() => void) | null = null;
  ctx.emit('page_view', { title: title(), path: path(), referrer: sanitizeUrl(document.referrer) });
  ctx.t.add(() => pending && pending());
  return () => {
    const k = key();
    if (k === last) return;
    last = k;
    if (pending) pending(); // an earlier route that never rendered a frame goes out now
    const p = path();
    const fire = (pending = () => {
      if (pending !== fire) return;
      pending = null;
      clearTimeout(timer);
      ctx.emit('page_view', { title: title(), path: p });
    });
    const timer = setTimeout(fire, TITLE_WAIT_MS);
    if (typeof requestAnimationFrame === 'function') requestAnimationFrame(() => setTimeout(fire, 0));
  };
}
