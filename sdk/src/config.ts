import type { CaptureOptions, ObserverEvent, ObserverOptions } from './types';

/** Options after defaults and validation. */
export interface Config {
  apiKey: string;
  ingestUrl: string;
  debug: boolean;
  sampleRate: number;
  respectDoNotTrack: boolean;
  capture: CaptureOptions;
  flushInterval: number;
  maxBatchSize: number;
  maxBatchBytes: number;
  maxQueueSize: number;
  maxQueueBytes: number;
  sessionIdleTimeout: number;
  sessionMaxDuration: number;
  beforeSend?: (event: ObserverEvent) => ObserverEvent | null | undefined;
}

/** The server refuses larger events (10 KiB) and batches (the SDK keeps to 50). */
export const MAX_EVENT_BYTES = 10240;
export const MAX_BATCH_SIZE = 50;
/** sendBeacon and keepalive fetch share a 64 KiB in-flight budget. */
export const KEEPALIVE_BYTES = 60000;

const num = (v: unknown, dflt: number, min: number, max: number): number =>
  typeof v === 'number' && v === v ? Math.min(max, Math.max(min, v)) : dflt;

/** Fills defaults; throws only on a missing apiKey/endpoint (init turns that into a no-op). */
export function resolveConfig(o: ObserverOptions): Config {
  if (!o || !o.apiKey || !o.endpoint) throw new Error('apiKey and endpoint are required');
  const c = o.capture || {};
  const on = (v: boolean | undefined) => v !== false;
  return {
    apiKey: String(o.apiKey),
    ingestUrl: String(o.endpoint).replace(/\/+$/, '') + '/v1/events',
    debug: o.debug === true,
    sampleRate: num(o.sampleRate, 1, 0, 1),
    respectDoNotTrack: o.respectDoNotTrack !== false,
    capture: {
      clicks: on(c.clicks),
      errors: on(c.errors),
      network: on(c.network),
      navigation: on(c.navigation),
      pageViews: on(c.pageViews),
      webVitals: on(c.webVitals),
    },
    flushInterval: num(o.flushInterval, 5000, 100, 3600000),
    maxBatchSize: num(o.maxBatchSize, MAX_BATCH_SIZE, 1, MAX_BATCH_SIZE),
    maxBatchBytes: num(o.maxBatchBytes, KEEPALIVE_BYTES, MAX_EVENT_BYTES, 900000),
    maxQueueSize: num(o.maxQueueSize, 1000, 1, 10000),
    maxQueueBytes: num(o.maxQueueBytes, 500000, MAX_EVENT_BYTES, 2000000),
    sessionIdleTimeout: num(o.sessionIdleTimeout, 30 * 60000, 1000, 1e10),
    sessionMaxDuration: num(o.sessionMaxDuration, 24 * 3600000, 1000, 1e10),
    beforeSend: typeof o.beforeSend === 'function' ? o.beforeSend : undefined,
  };
}
