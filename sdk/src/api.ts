import { Client } from './client.js';
import { makeLogger } from './log.js';
import type { ObserverGlobal, ObserverInstance, ObserverOptions } from './types.js';
import { VERSION } from './version.js';

/** Shared by every copy of the SDK on the page, so a second load or init does not double-capture. */
const GLOBAL_KEY = '__observer_instance__';
const g = globalThis as unknown as Record<string, Client | undefined>;

/** The instance methods `window.Observer` forwards to the running instance. */
const METHODS = ['track', 'captureException', 'setProperties', 'flush', 'shutdown', 'optOut', 'optIn'] as const;

/** What init returns when the SDK cannot run: every method exists and does nothing. */
const noop = {
  getSessionId: () => '',
  getAnonymousId: () => '',
  stats: () => ({ queued: 0, sent: 0, retries: 0, dropped: {} }),
} as unknown as ObserverInstance;
for (const m of METHODS) (noop as unknown as Record<string, () => unknown>)[m] = () => Promise.resolve();

/** Starts the SDK, or returns the instance already running on this page. Never throws. */
export function init(options: ObserverOptions): ObserverInstance {
  try {
    const existing = g[GLOBAL_KEY];
    if (existing) {
      // JSON leaves functions out: two inits differing only in callbacks count as the same.
      let same = false;
      try {
        same = JSON.stringify(options) === JSON.stringify(existing.options);
      } catch { /* unserializable options: say so */ }
      if (!same) makeLogger(existing.cfg.debug || !!(options && options.debug))('init again with other options: ignored (shutdown() first)');
      return existing;
    }
    const c: Client = new Client(options, () => {
      if (g[GLOBAL_KEY] === c) delete g[GLOBAL_KEY];
    });
    g[GLOBAL_KEY] = c;
    return c;
  } catch (e) {
    makeLogger(!!(options && options.debug))('init failed; SDK disabled:', e);
    return noop;
  }
}

const current = (): ObserverInstance => g[GLOBAL_KEY] || noop;

/** The object the script build puts on `window.Observer`: `init`, and every method on the running instance. */
export const Observer = { init, version: VERSION } as ObserverGlobal;
for (const m of METHODS) (Observer as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => (current()[m] as (...a: unknown[]) => unknown)(...a);

/** Replays the calls the loader snippet queued (`window.Observer.q`) before the script arrived, in order. */
export function replay(queue: unknown): void {
  for (const c of (Array.isArray(queue) ? queue : []) as [string, unknown[]][]) {
    try {
      (Observer as unknown as Record<string, (...a: unknown[]) => unknown>)[c[0]](...c[1]);
    } catch { /* never throw into the page */ }
  }
}
