import type { Persisted } from './outbox.js';
import type { KV } from './storage.js';
import { uuid } from './uuid.js';

export const QUEUE_PREFIX = '__observer_q:';
/** All tabs' queues together stay under this many characters of localStorage. */
export const STORE_CAP = 256 * 1024;
/** Without Web Locks, a queue whose owner stopped refreshing it this long ago is orphaned. */
export const ORPHAN_MS = 60000;

type Locks = {
  request(name: string, opts: { ifAvailable?: boolean }, cb: (lock: unknown) => Promise<void> | void): Promise<unknown>;
};

/** The Web Locks API where the page has it (secure contexts), else null. */
export function webLocks(): Locks | null {
  try {
    const l = (navigator as unknown as { locks?: Locks }).locks;
    return l && typeof l.request === 'function' ? l : null;
  } catch {
    return null;
  }
}

/**
 * This page's persisted queue. Every page load gets a fresh key (never one copied with
 * sessionStorage, so duplicated and restored tabs cannot share one) and holds a Web Lock
 * named after it while alive; a queue whose lock is free has no owner, and the one page
 * that gets its lock adopts it. Without Web Locks, owners refresh `t` and a queue left
 * unrefreshed for ORPHAN_MS is adopted.
 */
export class QueueStore {
  id = uuid();
  owned = false;
  private unlock: (() => void) | null = null;

  constructor(private readonly kv: KV, private readonly locks: Locks | null, private readonly now: () => number) {}

  get key(): string {
    return QUEUE_PREFIX + this.id;
  }

  /**
   * Takes the lock of this page's queue; `ready` runs once it is held. The queue is this page's
   * to write from the request on, not from the grant: a page that hides before a busy browser
   * grants its lock still keeps its queue (the key is new, so no other page asks for its lock
   * first; were one to, the server's dedup on event_id counts a resent event once).
   */
  claim(ready: () => void): void {
    const { locks } = this;
    const asked = this.owned;
    this.owned = true;
    if (!locks || asked) return ready();
    void locks
      .request(this.key, {}, () => {
        if (!this.owned) return; // given up (page hide) before the grant: released at once
        ready();
        return new Promise<void>((r) => (this.unlock = r));
      })
      .catch(() => {});
  }

  /** Gives up the lock (page hide: a page holding locks is kept out of the back/forward cache). */
  unclaim(): void {
    this.owned = false;
    if (this.unlock) this.unlock();
    this.unlock = null;
  }

  /** Hands every ownerless queue of another page to `take`, then deletes it. */
  adoptOrphans(take: (p: Persisted) => void): void {
    for (const k of this.kv.keys()) {
      if (k.indexOf(QUEUE_PREFIX) !== 0 || k === this.key) continue;
      const grab = () => {
        const p = this.read(k);
        this.kv.remove(k);
        if (p) take(p);
      };
      if (!this.locks) {
        const p = this.read(k);
        if (!p || this.now() - (p as Persisted & { t: number }).t > ORPHAN_MS) grab();
      } else
        void this.locks
          .request(k, { ifAvailable: true }, (lock) => {
            if (lock) grab();
          })
          .catch(() => {});
    }
  }

  /** Characters this page may store: the cap less what the other pages' queues hold. */
  allowance(): number {
    let others = 0;
    for (const k of this.kv.keys()) if (k.indexOf(QUEUE_PREFIX) === 0 && k !== this.key) others += (this.kv.get(k) || '').length + k.length;
    return STORE_CAP - others - this.key.length;
  }

  save(json: string | null): void {
    if (!this.owned) return;
    if (json === null) this.kv.remove(this.key);
    else this.kv.set(this.key, '{"t":' + this.now() + ',' + json.slice(1));
  }

  read(k: string = this.key): Persisted | null {
    try {
      const r: unknown = JSON.parse(this.kv.get(k) || 'null');
      return r && typeof r === 'object' ? (r as Persisted) : null;
    } catch {
      return null;
    }
  }

  /** Deletes every page's queue (opt-out). */
  purgeAll(): void {
    for (const k of this.kv.keys()) if (k.indexOf(QUEUE_PREFIX) === 0) this.kv.remove(k);
  }
}
