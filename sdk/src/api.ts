import { Client } from './client';
import { makeLogger } from './log';
import type { ObserverInstance, ObserverOptions } from './types';
import { VERSION } from './version';

/** Shared by every copy of the SDK on the page, so a second load or init does not double-capture. */
const GLOBAL_KEY = '__observer_instance__';

const noop: ObserverInstance = {
  track() {},
  flush: () => Promise.resolve(),
  shutdown() {},
  optOut() {},
  optIn() {},
  getSessionId: () => '',
  getAnonymousId: () => '',
  stats: () => ({ queued: 0, sent: 0, retries: 0, dropped: {} }),
};

/** Starts the SDK, or returns the instance already running on this page. Never throws. */
export function init(options: ObserverOptions): ObserverInstance {
  try {
    const g = globalThis as unknown as Record<string, ObserverInstance | undefined>;
    const existing = g[GLOBAL_KEY];
    if (existing) return existing;
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

/** The object the script build puts on `window.Observer`. */
export const Observer = { init, version: VERSION };
