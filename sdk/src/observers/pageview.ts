import type { Ctx } from '../context';
import { maskText, sanitizeUrl } from '../privacy';

/** Emits one `page_view` for the current location; the first one carries the referrer. */
export function pageView(ctx: Ctx, first: boolean): void {
  const md: Record<string, unknown> = { title: maskText(document.title || '').slice(0, 200), path: sanitizeUrl(location.pathname, location.origin).slice(location.origin.length) };
  if (first) md.referrer = sanitizeUrl(document.referrer);
  ctx.emit('page_view', md);
}
