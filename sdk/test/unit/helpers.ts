// Test helpers: a fake clock with timers, and a scripted transport.
import type { SendResult, Transport } from '../../src/transport';
import type { ObserverEvent } from '../../src/types';

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

export const ok = (extra: Partial<SendResult> = {}): SendResult => ({ status: 202, retryAfter: 0, rateWait: 0, rejected: 0, ...extra });
export const status = (s: number, extra: Partial<SendResult> = {}): SendResult => ({ ...ok(), status: s, ...extra });

/** A transport answering from a script (last answer repeats), recording every batch. */
export class ScriptedTransport implements Transport {
  sends: Array<{ t: number; ids: string[] }> = [];
  beacons: string[][] = [];
  beaconOk = true;
  constructor(private readonly timers: FakeTimers, private readonly answers: SendResult[] = [ok()]) {}
  async send(events: ObserverEvent[], _keepalive?: boolean): Promise<SendResult> {
    this.sends.push({ t: this.timers.now(), ids: events.map((e) => e.event_id) });
    const a = this.answers.length > 1 ? (this.answers.shift() as SendResult) : this.answers[0];
    return typeof a === 'function' ? (a as (n: number) => SendResult)(events.length) : a;
  }
  beacon(events: ObserverEvent[]): boolean | Promise<boolean> {
    if (this.beaconOk) this.beacons.push(events.map((e) => e.event_id));
    return this.beaconOk || this.fallback;
  }
  fallback: boolean | Promise<boolean> = false;
}

let n = 0;
export function makeEvent(extra: Partial<ObserverEvent> = {}): ObserverEvent {
  n++;
  return { event_id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, type: 'custom', name: 'e' + n, timestamp: 1_700_000_000_000 + n, session_id: 's', url: 'https://x.test/', metadata: {}, ...extra };
}
