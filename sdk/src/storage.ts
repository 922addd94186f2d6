/** A small key-value view over Web Storage that never throws. */
export interface KV {
  get(key: string): string | null;
  set(key: string, value: string): void;
  remove(key: string): void;
  keys(): string[];
}

/** Wraps localStorage; falls back to memory when storage is missing or blocked. */
export function webStorage(): KV {
  let s: Storage | null;
  try {
    s = window.localStorage;
    s.setItem('__observer_probe', '1');
    s.removeItem('__observer_probe');
  } catch {
    s = null;
  }
  return s ? storageKV(s) : memoryKV();
}

function storageKV(s: Storage): KV {
  // Storage throws when blocked or full: a failed write keeps the data in memory only.
  const t = <T>(f: () => T, d: T): T => {
    try {
      return f();
    } catch {
      return d;
    }
  };
  return {
    get: (k) => t(() => s.getItem(k), null),
    set: (k, v) => t(() => s.setItem(k, v), undefined),
    remove: (k) => t(() => s.removeItem(k), undefined),
    keys: () => t(() => Object.keys(s), []),
  };
}

/** In-memory storage, for tests and for browsers that block Web Storage. */
export function memoryKV(): KV {
  const m = new Map<string, string>();
  return {
    get: (k) => (m.has(k) ? (m.get(k) as string) : null),
    set: (k, v) => void m.set(k, v),
    remove: (k) => void m.delete(k),
    keys: () => Array.from(m.keys()),
  };
}
