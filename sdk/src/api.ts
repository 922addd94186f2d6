import { Client } from './client.js';
import { makeLogger } from './log.js';
import type { ObserverGlobal, ObserverInstance, ObserverOptions } from './types.js';
import { VERSION } from './version.js';

/** Shared by every copy of the SDK on the page, so a second load or init does not double-capture. */
const GLOBAL_KEY = '__observer_instance__';
const g = globalThis as unknown as Record<string, Client | undefined>;
type Fns = Record<string, (...a: unknown[]) => unknown>;

/** The instance methods that act (the getters are in `noop` below). */
const ACTIONS = ['track', 'captureException', 'setProperties', 'flush', 'shutdown', 'optOut', 'optIn'] as const;

/**
 * What init returns when the SDK cannot run, and what `window.Observer` forwards to while no
 * instance runs: every method exists; the getters answer as when not capturing, the rest do nothing.
 */
const noop: Fns = {
  getSessionId: () => '',
  getAnonymousId: () => '',
  stats: () => ({ queued: 0, sent: 0, retries: 0, dropped: {} }),
};
for (const m of ACTIONS) noop[m] = () => Promise.resolve();

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
      if (!same) makeLogger(existing.cfg.debug || !!(options && options.debug))('init again: other options ignored (shutdown() first)');
      return existing;
    }
    const c: Client = new Client(options, () => {
      if (g[GLOBAL_KEY] === c) delete g[GLOBAL_KEY];
    });
    g[GLOBAL_KEY] = c;
    return c;
  } catch (e) {
    makeLogger(!!(options && options.debug))('init failed; SDK disabled:', e);
    return noop as unknown as ObserverInstance;
  }
}

const current = (): Fns => (g[GLOBAL_KEY] as unknown as Fns | undefined) || noop;

/**
 * The object the script build puts on `window.Observer`: `init`, `version`, and every instance
 * method (those of `noop`: the getters too) forwarded to the running instance, else to `noop`.
 */
export const Observer = { init, version: VERSION } as ObserverGlobal;
for (const m in noop) (Observer as unknown as Fns)[m] = (...a) => current()[m](...a);

/**
 * Replays the calls the loader snippet queued (`window.Observer.q`) before the script arrived, in
 * order. An entry is `[method, args, resolve?]`: the snippet's promise for that call settles
 * with what the call returned (the instance for `init`, after the send for `flush`).
 */
export function replay(queue: unknown): void {
  for (const c of (Array.isArray(queue) ? queue : []) as [string, unknown[], (v: unknown) => void][]) {
    let r;
    try {
      r = (Observer as unknown as Fns)[c[0]](...c[1]);
    } catch { /* never throw into the page */ }
    try {
      c[2](r);
    } catch { /* an entry without a resolver (an older snippet) */ }
  }
}
