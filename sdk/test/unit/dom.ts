// A browser-like global scope for unit tests of DOM code: happy-dom's Window, plus an
// in-memory Web Locks manager (happy-dom has none) and a recording fetch.
import { Window } from 'happy-dom';

const KEYS = ['window', 'document', 'location', 'history', 'navigator', 'localStorage', 'sessionStorage', 'Event', 'CustomEvent', 'MouseEvent',
  'ErrorEvent', 'PromiseRejectionEvent', 'StorageEvent', 'PageTransitionEvent', 'HTMLElement', 'Element', 'Node', 'CSS', 'XMLHttpRequest', 'requestAnimationFrame'];

/**
 * Web Locks semantics the SDK relies on: exclusive locks granted in request order, `ifAvailable`
 * answers null when held, a waiting request is granted when the holder releases. Waiting uses
 * no timer (a pending wait does not keep the test process alive).
 */
export class FakeLocks {
  held = new Set<string>();
  private queues = new Map<string, Array<() => void>>();

  async request(name: string, opts: { ifAvailable?: boolean }, cb: (lock: unknown) => unknown): Promise<unknown> {
    if (this.held.has(name)) {
      if (opts.ifAvailable) return cb(null);
      await new Promise<void>((grant) => {
        const q = this.queues.get(name) ?? [];
        this.queues.set(name, q);
        q.push(grant);
      });
    }
    this.held.add(name);
    try {
      return await cb({ name });
    } finally {
      this.release(name);
    }
  }

  /** Frees `name` (its holder is gone) and grants it to the oldest waiter. */
  release(name: string): void {
    this.held.delete(name);
    const next = this.queues.get(name)?.shift();
    if (next) {
      this.held.add(name);
      next();
    }
  }
}

export interface Dom {
  win: Window;
  requests: Array<{ url: string; init?: RequestInit; body: { events: Array<{ event_id: string; type: string; name?: string; metadata: Record<string, unknown> }>; client_report?: { id: string; dropped: Record<string, number> } } }>;
  answer: number;
  locks: FakeLocks;
  close(): Promise<void>;
}

/** Installs a fresh page at `url` as the global scope (one at a time). */
export function installDom(url = 'https://shop.test/home', locks = new FakeLocks()): Dom {
  const win = new Window({ url });
  const g = globalThis as unknown as Record<string, unknown>;
  const dom: Dom = { win, requests: [], answer: 202, locks, close: async () => {} };
  for (const k of KEYS) Object.defineProperty(g, k, { value: (win as unknown as Record<string, unknown>)[k], configurable: true, writable: true });
  Object.defineProperty(win.navigator, 'locks', { value: locks, configurable: true });
  for (const k of ['addEventListener', 'removeEventListener', 'dispatchEvent'] as const) g[k] = (win as unknown as Record<string, (...a: unknown[]) => unknown>)[k].bind(win);
  const fakeFetch = async (u: string, init?: RequestInit) => {
    dom.requests.push({ url: u, init, body: init && init.body ? JSON.parse(String(init.body)) : { events: [] } });
    const n = dom.requests[dom.requests.length - 1].body.events.length;
    return new Response(JSON.stringify({ accepted: n, rejected: [] }), { status: dom.answer });
  };
  g.fetch = fakeFetch;
  (win as unknown as Record<string, unknown>).fetch = fakeFetch;
  dom.close = async () => {
    delete g.__observer_instance__;
    await win.happyDOM.abort();
    win.close();
  };
  return dom;
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
