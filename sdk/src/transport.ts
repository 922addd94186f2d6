import { rateLimitWaitMs, retryAfterMs } from './ratelimit.js';
import type { ObserverEvent } from './types.js';
import { uuid } from './uuid.js';

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

/**
 * One POST. `keepalive` lets it outlive the page (its bytes count against the browser's
 * 64 KiB keepalive budget); `plain` sends text/plain with the key in the body, a simple CORS
 * request with no preflight, for page hide.
 */
export type Transport = (events: ObserverEvent[], keepalive: boolean, plain: boolean) => Promise<SendResult>;

/** The body the ingest API reads; `api_key` only for header-less (text/plain) requests. */
export function encodeBody(events: ObserverEvent[], apiKey?: string): string {
  const body: Record<string, unknown> = { events, sent_at: new Date().toISOString() };
  if (apiKey) body.api_key = apiKey;
  return JSON.stringify(body);
}

const NETWORK_ERROR: SendResult = { status: 0, retryAfter: 0, rateWait: 0, rejected: 0 };

export function createTransport(fetchFn: FetchLike | undefined, url: string, apiKey: string, now: () => number): Transport {
  return async (events, keepalive, plain) => {
    try {
      if (!fetchFn) return NETWORK_ERROR;
      const headers: Record<string, string> = plain
        ? { 'Content-Type': 'text/plain' }
        : { 'Content-Type': 'application/json', Authorization: 'Bearer ' + apiKey, 'X-Request-ID': uuid() };
      const res = await fetchFn(url, { method: 'POST', body: encodeBody(events, plain ? apiKey : undefined), keepalive, credentials: 'omit', headers });
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
      return NETWORK_ERROR;
    }
  };
}
