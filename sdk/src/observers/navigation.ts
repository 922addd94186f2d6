import type { Ctx } from '../context.js';
import { sanitizeUrl } from '../privacy.js';

/**
 * SPA navigation through history.pushState/replaceState, popstate and hashchange. Calls
 * `onChange` whenever the URL changed; emits `navigation` events when `emitEvents`.
 */
export function observeNavigation(ctx: Ctx, emitEvents: boolean, onChange: () => void): void {
  let last = location.href;
  const changed = (kind: string) => {
    const to = location.href;
    if (to === last) return;
    const from = last;
    last = to;
    if (emitEvents) ctx.emit('navigation', { kind, from: sanitizeUrl(from), to: sanitizeUrl(to) });
    onChange();
  };
  for (const key of ['pushState', 'replaceState'] as const) {
    ctx.t.patch(history, key, (orig) => function (this: unknown, ...args: unknown[]) {
      const r = orig.apply(this, args);
      try { changed(key); } catch { /* ignore */ }
      return r;
    });
  }
  ctx.t.listen(window, 'popstate', () => changed('popstate'));
  ctx.t.listen(window, 'hashchange', () => changed('hashchange'));
}
