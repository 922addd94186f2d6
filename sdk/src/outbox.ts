import type { ObserverEvent } from './types.js';

/** One event with its JSON (serialized once) and its UTF-8 size. */
export interface Item {
  e: ObserverEvent;
  j: string;
  b: number;
}

/** A batch as first attempted: resent with the same events in the same order until answered. */
export interface Batch {
  items: Item[];
  bytes: number;
  /** A request for it is in flight. */
  busy: boolean;
}

const batchOf = (items: Item[]): Batch => ({ items, bytes: items.reduce((s, it) => s + it.b + 1, 0), busy: false });

/** What a tab keeps in storage: frozen batches first, then events not yet attempted. */
export interface Persisted {
  b: ObserverEvent[][];
  e: ObserverEvent[];
}

/**
 * The events waiting for a 2xx: frozen batches (oldest first) and loose events. Bounded in
 * count and bytes: when full the oldest loose events go first, every drop counted.
 */
export class Outbox {
  batches!: Batch[];
  loose!: Item[];
  bytes!: number;

  constructor(private readonly max: { count: number; bytes: number }, private readonly onChange: () => void = () => {}) {
    this.clear();
  }

  get length(): number {
    let n = this.loose.length;
    for (const b of this.batches) n += b.items.length;
    return n;
  }

  /** Adds an event; returns how many old ones were dropped to make room. */
  push(it: Item): number {
    this.loose.push(it);
    this.bytes += it.b;
    const n = this.shrink(this.max.count, this.max.bytes);
    this.onChange();
    return n;
  }

  /** Drops the oldest events (loose first, then batches not in flight, then any when `force`) until within the limits. */
  shrink(count: number, bytes: number, force = false): number {
    let n = 0;
    while (this.length > count || this.bytes > bytes) {
      if (this.loose.length) {
        this.bytes -= (this.loose.shift() as Item).b;
        n++;
        continue;
      }
      const b = this.batches.find((x) => !x.busy) || (force ? this.batches[0] : undefined);
      if (!b) break;
      n += b.items.length;
      this.done(b);
    }
    return n;
  }

  /** The oldest batch not in flight, else a new one frozen from the loose events (null if none). */
  next(maxCount: number, maxBytes: number): Batch | null {
    for (const b of this.batches) if (!b.busy) return b;
    if (!this.loose.length) return null;
    let n = 0;
    for (let size = 0; n < this.loose.length && n < maxCount && (!n || size + this.loose[n].b + 1 <= maxBytes); ) size += this.loose[n++].b + 1;
    const batch = batchOf(this.loose.splice(0, n));
    this.batches.push(batch);
    this.onChange();
    return batch;
  }

  /** The batch is answered for (stored or refused): it leaves the outbox. */
  done(batch: Batch): void {
    const i = this.batches.indexOf(batch);
    if (i < 0) return;
    this.batches.splice(i, 1);
    for (const it of batch.items) this.bytes -= it.b;
    this.onChange();
  }

  /** A 413: the batch becomes its two halves, in order; false when it holds a single event. */
  split(batch: Batch): boolean {
    const i = this.batches.indexOf(batch);
    if (i < 0 || batch.items.length < 2) return false;
    const half = Math.ceil(batch.items.length / 2);
    this.batches.splice(i, 1, batchOf(batch.items.slice(0, half)), batchOf(batch.items.slice(half)));
    this.onChange();
    return true;
  }

  /** Drops events stamped before `minTs` (batches whole, as their oldest event); returns how many. */
  expire(minTs: number): number {
    let n = 0;
    for (const b of this.batches.slice()) if (!b.busy && b.items[0].e.timestamp < minTs && (n += b.items.length)) this.done(b);
    while (this.loose.length && this.loose[0].e.timestamp < minTs) {
      this.bytes -= (this.loose.shift() as Item).b;
      n++;
    }
    return n;
  }

  /** Takes in another tab's persisted queue (its frozen batches stay frozen). */
  absorb(p: Persisted, item: (e: ObserverEvent) => Item | null): void {
    const items = (list: unknown): Item[] => (Array.isArray(list) ? ((list as Partial<ObserverEvent>[]).map((e) => (e && typeof e.event_id === 'string' ? item(e as ObserverEvent) : null)).filter(Boolean) as Item[]) : []);
    for (const raw of Array.isArray(p.b) ? p.b : []) {
      const its = items(raw);
      if (its.length) this.batches.push(batchOf(its));
      for (const it of its) this.bytes += it.b;
    }
    for (const it of items(p.e)) {
      this.loose.push(it);
      this.bytes += it.b;
    }
    this.onChange();
  }

  clear(): void {
    this.batches = [];
    this.loose = [];
    this.bytes = 0;
  }

  /** The outbox as stored, cheap because each event is serialized once. */
  toJSON(): string {
    const list = (items: Item[]) => '[' + items.map((it) => it.j).join(',') + ']';
    return '{"b":[' + this.batches.map((b) => list(b.items)).join(',') + '],"e":' + list(this.loose) + '}';
  }
}
