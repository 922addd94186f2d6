import type { Ctx } from '../context';
import { sanitizeUrl, scrub } from '../privacy';
import type { Metadata } from '../types';

/** An error this soon after a click is an "error click". */
const ERROR_CLICK_MS = 1000;

/** Uncaught errors and unhandled promise rejections: message, stack, source. */
export function observeErrors(ctx: Ctx): void {
  const report = (kind: string, message: unknown, err: unknown, source?: string, lineno?: number, colno?: number) => {
    const stack = err && typeof (err as Error).stack === 'string' ? (err as Error).stack : undefined;
    const md: Metadata = { kind, message: String(message == null ? '' : message), stack, source: source ? sanitizeUrl(source) : undefined, lineno, colno };
    if (err && typeof err === 'object' && (err as Error).name) md.error_type = (err as Error).name;
    if (ctx.lastClick.t && ctx.now() - ctx.lastClick.t <= ERROR_CLICK_MS) {
      md.error_click = true;
      md.click_selector = ctx.lastClick.selector;
    }
    ctx.emit('error', scrub(md, 4000) as Metadata);
  };
  ctx.t.listen(window, 'error', (e) => {
    if (typeof ErrorEvent === 'undefined' || !(e instanceof ErrorEvent)) return; // resource load errors
    report('error', e.message, e.error, e.filename, e.lineno, e.colno);
  });
  ctx.t.listen(window, 'unhandledrejection', (e) => {
    const r = (e as PromiseRejectionEvent).reason;
    let msg: unknown = r && typeof r === 'object' && 'message' in r ? (r as Error).message : r;
    if (msg && typeof msg === 'object') {
      try { msg = JSON.stringify(msg); } catch { msg = String(msg); }
    }
    report('unhandledrejection', msg, r);
  });
}
