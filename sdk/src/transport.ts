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
  /** The JSON answer, when there was one: its `rejected` lists the events a 2xx refused one by one. */
  j?: Answer;
}

/** What the ingest API answers: a 2xx body, or the error contract (`details`: the rejections of a 400). */
export interface Answer {
  accepted?: number;
  rejected?: Rejection[];
  request_id?: string;
  client_report?: string;
  error?: { code?: string; request_id?: string; details?: unknown };
}

export interface Rejection {
  index: number;
  code: string;
}

/** Drops counted since the last acknowledged report, under an id the server counts once. */
export interface ClientReport {
  id: string;
  dropped: Record<string, number>;
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
export type Transport = (events: ObserverEvent[], keepalive: boolean, plain: boolean, report?: ClientReport) => Promise<SendResult>;

/** The body the ingest API reads; `api_key` only for header-less (text/plain) requests, `client_report` only when there is one. */
export function encodeBody(events: ObserverEvent[], apiKey?: string, report?: ClientReport): string {
  return JSON.stringify({ events, sent_at: new Date().toISOString(), api_key: apiKey, client_report: report });
}

export function createTransport(fetchFn: FetchLike | undefined, url: string, apiKey: string, now: () => number): Transport {
  return async (events, keepalive, plain, report) => {
    try {
      // Without fetch (fetchFn undefined) the call throws: a network error.
      const headers: Record<string, string> = plain
        ? { 'Content-Type': 'text/plain' }
        : { 'Content-Type': 'application/json', Authorization: 'Bearer ' + apiKey, 'X-Request-ID': uuid() };
      const res = await (fetchFn as FetchLike)(url, { method: 'POST', body: encodeBody(events, plain ? apiKey : undefined, report), keepalive, credentials: 'omit', headers });
      const h = (n: string) => res.headers.get(n);
      // No JSON body: no verdicts to read.
      const j = (await res.json().catch(() => undefined)) as Answer | undefined;
      return {
        status: res.status,
        retryAfter: retryAfterMs(h('Retry-After'), now()),
        rateWait: rateLimitWaitMs(h('X-RateLimit-Remaining'), h('X-RateLimit-Reset'), now()),
        j,
      };
    } catch {
      return { status: 0, retryAfter: 0, rateWait: 0 };
    }
  };
}
