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
        // String() of whatever the page passed is what fetch/XHR do with it themselves (WebIDL ByteString)
        // eslint-disable-next-line @typescript-eslint/no-base-to-string
        method: String(method || 'GET').toUpperCase(),
        url: sanitizeUrl(abs),
        status,
        duration_ms: Math.max(0, Math.round(ctx.now() - start)),
      };
      // a rejection may be anything: its message, else whatever String() makes of it
      // eslint-disable-next-line @typescript-eslint/no-base-to-string
      if (err) md.error = String((err as Error).message || err).slice(0, 500);
      ctx.emit('network', md);
    } catch { /* never let recording affect the request */ }
  };

  if (typeof window.fetch === 'function') {
    ctx.t.patch(window, 'fetch', (orig) => function (this: unknown, ...args: unknown[]) {
      const start = ctx.now();
      // A Promise from the real fetch; typed loosely, since another wrapper may return anything.
      const result = orig.apply(this, args) as Partial<Promise<Response>> | null | undefined;
      try {
        const input = args[0] as Request | URL | string;
        const init = args[1] as RequestInit | undefined;
        const isReq = typeof Request !== 'undefined' && input instanceof Request;
        // not a Request here: a URL or a string (or what the page passed), read as fetch reads it
        // eslint-disable-next-line @typescript-eslint/no-base-to-string
        const url = isReq ? input.url : String(input);
        const method = (init && init.method) || (isReq ? input.method : 'GET');
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
      const i = info.get(this);
      const start = ctx.now();
      if (i) {
        const done = () => {
          this.removeEventListener('loadend', done);
          report(i.m, i.u, this.status, start, this.status ? undefined : 'network error');
        };
        this.addEventListener('loadend', done);
      }
    } catch { /* ignore */ }
    return orig.apply(this, args);
  });
}
