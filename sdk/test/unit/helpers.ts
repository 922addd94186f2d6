// Test helpers: a fake clock with timers, a scripted transport, events and items.
import { fitEvent } from '../../src/event.js';
import type { Item } from '../../src/outbox.js';
import type { ClientReport, SendResult, Transport } from '../../src/transport.js';
import type { ObserverEvent } from '../../src/types.js';

export class FakeTimers {
  t = 1_700_000_000_000;
  private seq = 0;
  private pending = new Map<number, { at: number; fn: () => void }>();
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (id: unknown) => void this.pending.delete(id as number);
  /** Moves the clock forward, firing due timers in order and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
    await settle();
  }
  get timerCount(): number {
    return this.pending.size;
  }
}

export const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

export const ok = (extra: Partial<SendResult> = {}): SendResult => ({ status: 202, retryAfter: 0, rateWait: 0, ...extra });
export const status = (s: number, extra: Partial<SendResult> = {}): SendResult => ({ ...ok(), status: s, ...extra });

type Answer = SendResult | ((n: number) => SendResult);

/** A transport answering from a script (last answer repeats), recording every request. */
export class ScriptedTransport {
  sends: Array<{ t: number; ids: string[]; keepalive: boolean; plain: boolean; report?: ClientReport }> = [];
  constructor(private readonly timers: FakeTimers, private readonly answers: Answer[] = [ok()]) {}
  /** When set, requests wait for `release()` before answering. */
  hold = false;
  private waiting: Array<() => void> = [];
  release(): void {
    const w = this.waiting;
    this.waiting = [];
    w.forEach((f) => f());
  }
  fn: Transport = async (events: ObserverEvent[], keepalive: boolean, plain: boolean, report?: ClientReport) => {
    // The report as it went (a copy: what the request carried, whatever happens to it later).
    this.sends.push({ t: this.timers.now(), ids: events.map((e) => e.event_id), keepalive, plain, report: report && { id: report.id, dropped: { ...report.dropped } } });
    if (this.hold) await new Promise<void>((r) => this.waiting.push(r));
    const a = this.answers.length > 1 ? (this.answers.shift() as Answer) : this.answers[0];
    return typeof a === 'function' ? a(events.length) : a;
  };
}

let n = 0;
export function makeEvent(extra: Partial<ObserverEvent> = {}): ObserverEvent {
  n++;
  return { event_id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, type: 'custom', name: 'e' + n, timestamp: 1_700_000_000_000 + n, session_id: 's', url: 'https://x.test/', metadata: {}, ...extra };
}

/** An outbox item for an event, padded to about `bytes` when given. */
export function item(extra: Partial<ObserverEvent> = {}, bytes?: number): Item {
  const it = fitEvent(makeEvent(extra)) as Item;
  return bytes ? { ...it, b: bytes } : it;
}
