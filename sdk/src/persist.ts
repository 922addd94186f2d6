import type { KV } from './storage';
import type { ObserverEvent } from './types';
import { uuid } from './uuid';

const PREFIX = '__observer_queue:';
const TAB_KEY = '__observer_tab';
/** A queue untouched this long belongs to a closed tab and is adopted by the next page. */
const ORPHAN_MS = 60000;

export interface QueueStore {
  load(): ObserverEvent[];
  save(json: string, empty: boolean): void;
}

/**
 * Keeps each tab's queue under its own localStorage key (the tab id lives in sessionStorage,
 * so it survives a reload); queues left by closed tabs are adopted, oldest first.
 */
export function queueStore(local: KV, session: KV, now: () => number): QueueStore {
  let tab = session.get(TAB_KEY);
  if (!tab) session.set(TAB_KEY, (tab = uuid()));
  const key = PREFIX + tab;
  const read = (k: string): { t: number; e: ObserverEvent[] } | null => {
    try {
      const r = JSON.parse(local.get(k) || 'null');
      return r && Array.isArray(r.e) ? r : null;
    } catch {
      return null;
    }
  };
  return {
    load() {
      const own = read(key);
      let events: ObserverEvent[] = own ? own.e : [];
      for (const k of local.keys()) {
        if (k.indexOf(PREFIX) !== 0 || k === key) continue;
        const r = read(k);
        if (r && now() - r.t < ORPHAN_MS) continue;
        if (r) events = events.concat(r.e);
        local.remove(k);
      }
      return events.filter((e) => e && typeof e.event_id === 'string').sort((a, b) => a.timestamp - b.timestamp);
    },
    save(json, empty) {
      if (empty) local.remove(key);
      else local.set(key, '{"t":' + now() + ',"e":' + json + '}');
    },
  };
}
