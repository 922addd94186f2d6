import { backoffDelay } from './backoff';
import type { CircuitBreaker } from './breaker';
import type { RetryBudget } from './budget';
import { KEEPALIVE_BYTES } from './config';
import type { Logger } from './log';
import type { EventQueue } from './queue';
import { classify } from './transport';
import type { Transport } from './transport';
import type { ObserverEvent } from './types';

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface DispatcherOptions {
  interval: number;
  maxBatchSize: number;
  maxBatchBytes: number;
}

export interface DispatcherDeps {
  queue: EventQueue;
  transport: Transport;
  breaker: CircuitBreaker;
  budget: RetryBudget;
  timers: Timers;
  log: Logger;
  rng?: () => number;
  /** Counts a drop under a reason (never silent). */
  drop(reason: string, n: number): void;
}

/**
 * Moves events from the queue to the server: one request in flight at a time, a batch at
 * 50 events / the byte budget / the interval, retries with backoff under the breaker, the
 * retry budget, Retry-After and the rate-limit headers; 413 halves the batch.
 */
export class Dispatcher {
  sent = 0;
  retries = 0;
  private limit: number;
  /** Events of a batch refused with 413 not yet delivered: the limit stays low until they are. */
  private splitLeft = 0;
  private attempt = 0;
  private blockedUntil = 0;
  private timer: unknown = null;
  private running: Promise<void> | null = null;
  private inflight = new Set<string>();
  private stopped = false;

  constructor(private readonly d: DispatcherDeps, private readonly o: DispatcherOptions) {
    this.limit = o.maxBatchSize;
  }

  /** Called after each enqueue: send now if a batch is full, else within the interval. */
  notify(): void {
    const q = this.d.queue;
    if (q.length - this.inflight.size >= this.o.maxBatchSize || q.bytes >= this.o.maxBatchBytes) void this.flush();
    else this.schedule(this.o.interval, false);
  }

  /** Sends what is queued now (unless backing off); resolves when the pass ends, never rejects. */
  flush(): Promise<void> {
    if (this.running) return this.running;
    this.clearTimer();
    this.running = this.pump()
      .catch((e) => this.d.log('flush failed', e))
      .then(() => {
        this.running = null;
      });
    return this.running;
  }

  /** Hands what is left to sendBeacon (page hide); events the browser took leave the queue. */
  flushOnHide(): void {
    const now = this.d.timers.now();
    if (this.blockedUntil > now || this.d.breaker.state(now) === 'open') return; // kept in storage for the next visit
    const skip = new Set(this.inflight);
    for (let guard = 0; guard < 100; guard++) {
      const batch = this.d.queue.peek(this.o.maxBatchSize, KEEPALIVE_BYTES - 200, skip);
      if (!batch.length) return;
      const ids = new Set(batch.map((e) => e.event_id));
      const done = (ok: boolean) => {
        if (!ok) return;
        this.d.queue.remove(ids);
        this.sent += batch.length;
      };
      const r = this.d.transport.beacon(batch);
      if (r !== true) {
        // Not taken by sendBeacon: a keepalive fetch may still land; the quota is spent either way.
        if (r) r.then(done, () => {});
        return;
      }
      done(true);
      ids.forEach((id) => skip.add(id));
    }
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  start(): void {
    this.stopped = false;
    if (this.d.queue.length) this.schedule(this.o.interval, false);
  }

  private async pump(): Promise<void> {
    const { queue, transport, breaker, budget, timers, log } = this.d;
    while (queue.length) {
      const now = timers.now();
      if (this.blockedUntil > now) return this.schedule(this.blockedUntil - now, true);
      const retry = this.attempt > 0;
      if (retry && !budget.canRetry(now)) return this.schedule(budget.waitMs(now), true);
      if (!breaker.allow(now)) return this.schedule(Math.max(1, breaker.retryIn(now)), true);
      const batch = queue.peek(this.limit, this.o.maxBatchBytes);
      if (!batch.length) return;
      if (retry) {
        budget.recordRetry(now);
        this.retries++;
      } else budget.recordSend(now);
      const ids = new Set(batch.map((e: ObserverEvent) => e.event_id));
      this.inflight = ids;
      const res = await transport.send(batch, !retry);
      this.inflight = new Set();
      const after = timers.now();
      if (res.rateWait) this.blockedUntil = after + res.rateWait;
      const verdict = classify(res.status);
      log('sent', batch.length, 'events ->', res.status || 'network error');
      if (verdict === 'retry') {
        breaker.failure(after);
        const wait = Math.max(backoffDelay(this.attempt, 1000, 60000, this.d.rng), res.retryAfter, res.rateWait);
        this.attempt++;
        this.blockedUntil = Math.max(this.blockedUntil, after + wait);
        continue;
      }
      breaker.success();
      this.attempt = 0;
      if (verdict === 'split' && batch.length > 1) {
        this.limit = Math.max(1, Math.floor(batch.length / 2));
        this.splitLeft = Math.max(this.splitLeft, batch.length);
        continue;
      }
      queue.remove(ids);
      this.splitLeft -= batch.length;
      if (verdict === 'ok') {
        this.sent += batch.length - res.rejected;
        if (res.rejected) this.d.drop('rejected', res.rejected);
        if (this.splitLeft <= 0) this.limit = Math.min(this.o.maxBatchSize, this.limit * 2);
      } else this.d.drop(verdict === 'split' ? 'too_large' : 'refused_' + res.status, batch.length);
      if (this.stopped) return;
    }
  }

  private schedule(ms: number, force: boolean): void {
    if (this.stopped || (this.timer !== null && !force)) return;
    this.clearTimer();
    this.timer = this.d.timers.setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, Math.max(0, ms));
  }

  private clearTimer(): void {
    if (this.timer !== null) this.d.timers.clearTimeout(this.timer);
    this.timer = null;
  }
}
