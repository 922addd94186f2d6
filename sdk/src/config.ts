import { KEEPALIVE_BYTES } from './dispatcher.js';
import type { CaptureOptions, Metadata, ObserverEvent, ObserverOptions } from './types.js';

/** Options after defaults and validation. */
export interface Config {
  apiKey: string;
  ingestUrl: string;
  debug: boolean;
  sampleRate: number;
  respectDoNotTrack: boolean;
  defaultOptOut: boolean;
  maskAllText: boolean;
  pageViewTrigger: 'path' | 'url';
  release?: string;
  properties: Metadata;
  capture: CaptureOptions;
  /** `capture.webVitals: true` given explicitly: the core build (no vitals) says so in debug mode. */
  vitalsAsked: boolean;
  flushInterval: number;
  maxBatchSize: number;
  maxBatchBytes: number;
  maxQueueSize: number;
  maxQueueBytes: number;
  dedupWindow: number;
  sessionIdleTimeout: number;
  sessionMaxDuration: number;
  beforeSend?: (event: ObserverEvent) => ObserverEvent | null | undefined;
}

/** The server refuses larger events (10 KiB) and batches (the SDK keeps to 50). */
export const MAX_EVENT_BYTES = 10240;
export const MAX_BATCH_SIZE = 50;

/** [option, default, min, max] of every numeric option (ms, counts, bytes); out of range is clamped. */
const NUMBERS: Array<[keyof Config & keyof ObserverOptions, number, number, number]> = [
  ['sampleRate', 1, 0, 1],
  ['flushInterval', 5000, 100, 3600000],
  ['maxBatchSize', MAX_BATCH_SIZE, 1, MAX_BATCH_SIZE],
  ['maxBatchBytes', KEEPALIVE_BYTES / 2, MAX_EVENT_BYTES, KEEPALIVE_BYTES],
  ['maxQueueSize', 1000, 1, 5000],
  ['maxQueueBytes', 200000, MAX_EVENT_BYTES, 240000],
  // At most the server's default DEDUP_WINDOW (app/settings.py, one day): a stored event resent
  // after the server forgot its id would be stored twice (test/unit/config.test.ts reads it).
  ['dedupWindow', 86400000, 60000, 86400000],
  ['sessionIdleTimeout', 30 * 60000, 1000, 1e10],
  ['sessionMaxDuration', 24 * 3600000, 1000, 1e10],
];

/** Every observer, each on unless `capture.<name>` is false. */
const CAPTURE: Array<keyof CaptureOptions> = ['clicks', 'errors', 'network', 'navigation', 'pageViews', 'webVitals'];

/** Fills defaults; throws only on a missing apiKey/endpoint (init turns that into a no-op). */
export function resolveConfig(o: ObserverOptions): Config {
  if (!o || !o.apiKey || !o.endpoint) throw new Error('apiKey and endpoint are required');
  const c = o.capture || {};
  const cfg = {
    apiKey: String(o.apiKey),
    ingestUrl: String(o.endpoint).replace(/\/+$/, '') + '/v1/events',
    debug: o.debug === true,
    respectDoNotTrack: o.respectDoNotTrack !== false,
    defaultOptOut: o.defaultOptOut === true,
    maskAllText: o.maskAllText === true,
    pageViewTrigger: o.pageViewTrigger === 'url' ? 'url' : 'path',
    release: o.release ? String(o.release).slice(0, 200) : undefined,
    properties: o.properties && typeof o.properties === 'object' ? { ...o.properties } : {},
    capture: {},
    vitalsAsked: c.webVitals === true,
    beforeSend: typeof o.beforeSend === 'function' ? o.beforeSend : undefined,
  } as Config;
  for (const k of CAPTURE) cfg.capture[k] = c[k] !== false;
  for (const [k, dflt, min, max] of NUMBERS) {
    const v = o[k];
    (cfg as unknown as Record<string, number>)[k] = typeof v === 'number' && v === v ? Math.min(max, Math.max(min, v)) : dflt;
  }
  return cfg;
}
