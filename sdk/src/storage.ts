/** A small key-value view over Web Storage that never throws. */
export interface KV {
  get(key: string): string | null;
  set(key: string, value: string): void;
  remove(key: string): void;
  keys(): string[];
}

/** Wraps localStorage/sessionStorage; falls back to memory when storage is missing or blocked. */
export function webStorage(kind: 'localStorage' | 'sessionStorage'): KV {
  let s: Storage | null = null;
  try {
    s = (window as unknown as Record<string, Storage>)[kind];
    s.setItem('__observer_probe', '1');
    s.removeItem('__observer_probe');
  } catch {
    s = null;
  }
  return s ? storageKV(s) : memoryKV();
}

function storageKV(s: Storage): KV {
  return {
    get: (k) => { try { return s.getItem(k); } catch { return null; } },
    set: (k, v) => { try { s.setItem(k, v); } catch { /* quota: the queue stays in memory */ } },
    remove: (k) => { try { s.removeItem(k); } catch { /* ignore */ } },
    keys: () => { try { return Object.keys(s); } catch { return []; } },
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
