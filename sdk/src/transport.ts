import { KEEPALIVE_BYTES } from './config';
import { rateLimitWaitMs, retryAfterMs } from './ratelimit';
import { byteLength } from './size';
import type { ObserverEvent } from './types';
import { uuid } from './uuid';

/** What an attempt came back with, reduced to what the delivery policy needs. */
export interface SendResult {
  /** HTTP status, 0 for a network error. */
  status: number;
  /** Wait asked for by `Retry-After`, in ms. */
  retryAfter: number;
  /** Wait implied by `X-RateLimit-Remaining: 0` until `X-RateLimit-Reset`, in ms. */
  rateWait: number;
  /** Events the server refused one by one in a 202. */
  rejected: number;
}

export type Verdict = 'ok' | 'retry' | 'split' | 'drop';

/** Retry only what may succeed later: network errors, 408, 429, 5xx; 413 splits; other 4xx drop. */
export function classify(status: number): Verdict {
  if (status >= 200 && status < 300) return 'ok';
  if (status === 0 || status === 408 || status === 429 || status >= 500) return 'retry';
  if (status === 413) return 'split';
  return 'drop';
}

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface Transport {
  /** One POST; `keepalive` lets it outlive the page (first attempts only: retries skip the shared quota). */
  send(events: ObserverEvent[], keepalive?: boolean): Promise<SendResult>;
  /**
   * Delivery on page hide: true when sendBeacon took the request; else a keepalive fetch is
   * tried and its promise tells whether the server took it (false when neither could go).
   */
  beacon(events: ObserverEvent[]): boolean | Promise<boolean>;
}

/** The body the ingest API reads; `api_key` only for header-less (text/plain) requests. */
export function encodeBody(events: ObserverEvent[], apiKey?: string): string {
  const body: Record<string, unknown> = { events, sent_at: new Date().toISOString() };
  if (apiKey) body.api_key = apiKey;
  return JSON.stringify(body);
}

export function createTransport(fetchFn: FetchLike | undefined, url: string, apiKey: string, now: () => number): Transport {
  return {
    async send(events, keepalive = true) {
      const body = encodeBody(events);
      try {
        if (!fetchFn) throw new Error('no fetch');
        const res = await fetchFn(url, {
          method: 'POST',
          body,
          keepalive: keepalive && byteLength(body) <= KEEPALIVE_BYTES,
          credentials: 'omit',
          headers: {
            'Content-Type': 'application/json',
            Authorization: 'Bearer ' + apiKey,
            'X-Request-ID': uuid(),
          },
        });
        const h = (n: string) => res.headers.get(n);
        let rejected = 0;
        if (res.status === 202) {
          try {
            const j = (await res.json()) as { rejected?: unknown[] };
            rejected = (j && Array.isArray(j.rejected) && j.rejected.length) || 0;
          } catch { /* body unreadable: counts stay as they are */ }
        }
        return {
          status: res.status,
          retryAfter: retryAfterMs(h('Retry-After'), now()),
          rateWait: rateLimitWaitMs(h('X-RateLimit-Remaining'), h('X-RateLimit-Reset'), now()),
          rejected,
        };
      } catch {
        return { status: 0, retryAfter: 0, rateWait: 0, rejected: 0 };
      }
    },

    beacon(events) {
      const body = encodeBody(events, apiKey);
      try {
        if (typeof navigator !== 'undefined' && navigator.sendBeacon && navigator.sendBeacon(url, body)) return true;
      } catch { /* fall through to keepalive fetch */ }
      try {
        if (!fetchFn || byteLength(body) > KEEPALIVE_BYTES) return false;
        // text/plain keeps this a simple CORS request: no preflight, which may not survive unload.
        return fetchFn(url, { method: 'POST', body, keepalive: true, credentials: 'omit', headers: { 'Content-Type': 'text/plain' } }).then(
          (r) => r.status < 300 || r.type === 'opaque',
          () => false,
        );
      } catch {
        return false;
      }
    },
  };
}
