import type { Ctx } from '../context.js';
import { cutMask, sanitizeUrl, scrub } from '../privacy.js';
import type { Metadata } from '../types.js';

/** An error this soon after a click is an "error click". */
const ERROR_CLICK_MS = 1000;
/** One report per fingerprint per window; repeats are counted in `stats().dropped.error_repeat`. */
const REPEAT_MS = 60000;
/** At most BURST error events at once, refilled at one per REFILL_MS. */
const BURST = 10;
const REFILL_MS = 6000;
const MAX_FINGERPRINTS = 500;

export type ErrorReport = (kind: string, message: unknown, err: unknown, extra?: Metadata, source?: string, lineno?: number, colno?: number) => void;

/** A short string for any thrown value, bounded however big the value is (a full description is only built for what is sent). */
export function describe(v: unknown, full = false): string {
  try {
    const m = v && typeof v === 'object' ? (v as Error).message : v;
    if (typeof m === 'string') return m.slice(0, 500);
    if (!v || typeof v !== 'object') return String(v).slice(0, 500);
    if (full) return JSON.stringify(scrub(v, 100, { n: 30 })).slice(0, 500);
    // A fingerprint: the first few keys, without walking (or copying) a huge object.
    let k = '';
    let n = 0;
    for (const key in v) if ((k += key + ',') && ++n > 4) break;
    return 'object:' + k;
  } catch {
    return '?';
  }
}

/**
 * The one way errors become events: deduplicated by fingerprint (kind, message, source
 * position) and rate-limited, the cheap checks first, so an error storm costs the page
 * microseconds per error; the stack is read only for what is sent.
 */
export function errorReporter(ctx: Ctx): ErrorReport {
  const seen = new Map<string, number>();
  let tokens = BURST;
  let refilled = ctx.now();
  return (kind, message, err, extra, source, lineno, colno) => {
    const now = ctx.now();
    const msg = describe(message);
    const fp = [kind, msg, source, lineno, colno].join('|');
    const s = seen.get(fp);
    if (s && now - s < REPEAT_MS) return ctx.drop('error_repeat', 1);
    const add = Math.floor((now - refilled) / REFILL_MS);
    if (add > 0) {
      tokens = Math.min(BURST, tokens + add);
      refilled += add * REFILL_MS;
    }
    if (tokens <= 0) return ctx.drop('rate_limited', 1);
    tokens--;
    if (seen.size >= MAX_FINGERPRINTS) seen.clear();
    seen.set(fp, now);
    const stack = err && typeof (err as Error).stack === 'string' ? cutMask((err as Error).stack as string, 4000) : undefined;
    const md: Metadata = { kind, message: cutMask(msg.indexOf('object:') ? msg : describe(message, true), 500), stack, source: source ? sanitizeUrl(source) : undefined, lineno, colno };
    if (err && typeof err === 'object' && typeof (err as Error).name === 'string') md.error_type = (err as Error).name.slice(0, 100);
    if (ctx.lastClick.t && now - ctx.lastClick.t <= ERROR_CLICK_MS) {
      md.error_click = true;
      md.click_selector = ctx.lastClick.selector;
    }
    ctx.emit('error', extra ? { ...(scrub(extra, 500) as Metadata), ...md } : md);
  };
}

/** Uncaught errors and unhandled promise rejections. */
export function observeErrors(ctx: Ctx, report: ErrorReport): void {
  ctx.t.listen(window, 'error', (e) => {
    if (typeof ErrorEvent === 'undefined' || !(e instanceof ErrorEvent)) return; // resource load errors
    report('error', e.message, e.error, undefined, e.filename, e.lineno, e.colno);
  });
  ctx.t.listen(window, 'unhandledrejection', (e) => {
    const r: unknown = (e as PromiseRejectionEvent).reason;
    report('unhandledrejection', r, r);
  });
}
