import type { Ctx } from '../context.js';
import { isIgnored, labelOf, selectorOf } from '../element.js';

/** Rage click: this many clicks within RAGE_MS, each within RAGE_PX of the others. */
const RAGE_COUNT = 3;
const RAGE_MS = 1000;
const RAGE_PX = 30;

/** Clicks (selector, the control's own label, never a field's value) and rage clicks. */
export function observeClicks(ctx: Ctx): void {
  let recent: Array<{ t: number; x: number; y: number }> = [];
  ctx.t.listen(
    document,
    'click',
    (e) => {
      const ev = e as MouseEvent;
      const target = ev.target as Node | null;
      const el = target && target.nodeType === 1 ? (target as Element) : target && target.parentElement;
      if (!el || isIgnored(el)) return;
      const t = ctx.now();
      const selector = selectorOf(el);
      const md: Record<string, unknown> = { selector, text: labelOf(el, ctx.cfg.maskAllText), tag: el.tagName.toLowerCase(), x: Math.round(ev.clientX), y: Math.round(ev.clientY) };
      ctx.lastClick = { t, selector };
      // el.click(), dispatchEvent and keyboard activation are no pointer: never a rage click.
      if (!ev.isTrusted || ev.detail === 0) {
        md.synthetic = !ev.isTrusted;
        return ctx.emit('click', md);
      }
      ctx.emit('click', md);
      const p = { t, x: ev.clientX, y: ev.clientY };
      recent = recent.filter((c) => t - c.t <= RAGE_MS && Math.abs(c.x - p.x) <= RAGE_PX && Math.abs(c.y - p.y) <= RAGE_PX);
      recent.push(p);
      if (recent.length >= RAGE_COUNT) {
        ctx.emit('rage_click', { ...md, clicks: recent.length });
        recent = [];
      }
    },
    true,
  );
}
