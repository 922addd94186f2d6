import type { Ctx } from '../context.js';
import { sanitizeUrl } from '../privacy.js';

type Fn = (...a: unknown[]) => unknown;

/**
 * fetch and XMLHttpRequest, wrapped so the page sees exactly what it would without us:
 * the original is called, its return value returned and its exception rethrown untouched.
 * Requests to the ingest endpoint are never recorded.
 */
export function observeNetwork(ctx: Ctx): void {
  const own = ctx.cfg.ingestUrl;
  const report = (method: unknown, url: unknown, status: number, start: number, err?: unknown) => {
    try {
      const abs = new URL(String(url), location.href).href;
      if (abs.indexOf(own) === 0) return;
      const md: Record<string, unknown> = {
        method: String(method || 'GET').toUpperCase(),
        url: sanitizeUrl(abs),
        status,
        duration_ms: Math.max(0, Math.round(ctx.now() - start)),
      };
      if (err) md.error = String((err as Error).message || err).slice(0, 500);
      ctx.emit('network', md);
    } catch { /* never let recording affect the request */ }
  };

  if (typeof window.fetch === 'function') {
    ctx.t.patch(window, 'fetch', (orig) => function (this: unknown, ...args: unknown[]) {
      const start = ctx.now();
      const result = orig.apply(this, args) as Promise<Response>;
      try {
        const input = args[0] as Request | URL | string;
        const init = args[1] as RequestInit | undefined;
        const isReq = typeof Request !== 'undefined' && input instanceof Request;
        const url = isReq ? (input as Request).url : String(input);
        const method = (init && init.method) || (isReq ? (input as Request).method : 'GET');
        if (result && typeof result.then === 'function')
          result.then(
            (r) => report(method, url, r && typeof r.status === 'number' ? r.status : 0, start),
            (e) => report(method, url, 0, start, e || 'failed'),
          );
      } catch { /* ignore */ }
      return result;
    });
  }

  const X = typeof XMLHttpRequest !== 'undefined' ? XMLHttpRequest.prototype : null;
  if (!X) return;
  const info = new WeakMap<object, { m: unknown; u: unknown }>();
  ctx.t.patch(X, 'open', (orig: Fn) => function (this: XMLHttpRequest, ...args: unknown[]) {
    try { info.set(this, { m: args[0], u: args[1] }); } catch { /* ignore */ }
    return orig.apply(this, args);
  });
  ctx.t.patch(X, 'send', (orig: Fn) => function (this: XMLHttpRequest, ...args: unknown[]) {
    try {
      const xhr = this;
      const i = info.get(xhr);
      const start = ctx.now();
      if (i) {
        const done = () => {
          xhr.removeEventListener('loadend', done);
          report(i.m, i.u, xhr.status, start, xhr.status ? undefined : 'network error');
        };
        xhr.addEventListener('loadend', done);
      }
    } catch { /* ignore */ }
    return orig.apply(this, args);
  });
}
