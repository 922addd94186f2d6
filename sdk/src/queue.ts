import type { ObserverEvent } from './types';

export interface QueueLimits {
  maxCount: number;
  maxBytes: number;
}

interface Item {
  event: ObserverEvent;
  json: string;
  bytes: number;
}

/**
 * FIFO of serialized events bounded in count and bytes: when full, the oldest events go
 * first and every drop is counted. Events leave only when the server took them.
 */
export class EventQueue {
  private items: Item[] = [];
  private size = 0;
  dropped = 0;

  constructor(
    private readonly limits: QueueLimits,
    private readonly onChange: () => void = () => {},
  ) {}

  get length(): number {
    return this.items.length;
  }

  get bytes(): number {
    return this.size;
  }

  /** Adds one event (already serialized and measured); returns how many old events were dropped. */
  push(event: ObserverEvent, json: string, bytes: number): number {
    this.items.push({ event, json, bytes });
    this.size += bytes;
    let n = 0;
    while (this.items.length > this.limits.maxCount || (this.size > this.limits.maxBytes && this.items.length > 1)) {
      this.size -= (this.items.shift() as Item).bytes;
      n++;
    }
    this.dropped += n;
    this.onChange();
    return n;
  }

  /** The oldest events, at most `maxCount` of them and `maxBytes` in all (always at least one). */
  peek(maxCount: number, maxBytes: number, skip?: Set<string>): ObserverEvent[] {
    const out: ObserverEvent[] = [];
    let b = 0;
    for (const it of this.items) {
      if (out.length >= maxCount || (out.length && b + it.bytes > maxBytes)) break;
      if (skip && skip.has(it.event.event_id)) continue;
      out.push(it.event);
      b += it.bytes + 1;
    }
    return out;
  }

  /** Removes the events with these ids (those the server answered for). */
  remove(ids: Set<string>): void {
    const before = this.items.length;
    this.items = this.items.filter((it) => {
      if (!ids.has(it.event.event_id)) return true;
      this.size -= it.bytes;
      return false;
    });
    if (this.items.length !== before) this.onChange();
  }

  clear(): void {
    this.items = [];
    this.size = 0;
    this.onChange();
  }

  /** The queue as one JSON array, cheap because each event is serialized once. */
  toJSON(): string {
    return '[' + this.items.map((it) => it.json).join(',') + ']';
  }
}
