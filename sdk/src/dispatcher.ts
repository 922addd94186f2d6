import { backoffDelay } from './backoff.js';
import type { CircuitBreaker } from './breaker.js';
import type { RetryBudget } from './budget.js';
import type { Logger } from './log.js';
import type { Batch, Outbox } from './outbox.js';
import { classify } from './transport.js';
import { extensions } from './extensions.js';
import type { ClientReport, SendResult, Transport } from './transport.js';
import { uuid } from './uuid.js';

/** sendBeacon and keepalive fetch share a 64 KiB in-flight budget per page. */
export const KEEPALIVE_BYTES = 60000;

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The config's delivery options (the client passes its whole config). */
export interface DispatcherOptions {
  flushInterval: number;
  maxBatchSize: number;
  maxBatchBytes: number;
  /** Events older than this (ms) are past the server's dedup window: dropped, not resent. */
  dedupWindow: number;
}

export interface DispatcherDeps {
  outbox: Outbox;
  transport: Transport;
  breaker: CircuitBreaker;
  budget: RetryBudget;
  timers: Timers;
  log: Logger;
  rng?: () => number;
  /** False while the browser says it is offline. */
  online(): boolean;
  /** Persists the outbox now (a batch was frozen). */
  save(): void;
  /** Counts a drop under a reason (never silent; nothing when `n` is 0). */
  drop(reason: string, n: number): void;
}

/**
 * Moves events from the outbox to the server. An attempted batch is frozen and resent as is
 * until a 2xx (or a refusal) answers for it; retries back off under the breaker, the retry
 * budget, Retry-After and the rate-limit headers; 413 splits the batch in two.
 *
 * Drops are reported too (client reports): `pending` counts those not yet in a report; a
 * request that finds no report in flight moves them into a new one (a new id), and every
 * request carries the report in flight until a 2xx answers one that carried it. Any other
 * answer (a network error, a lost answer, 5xx, 429, other 4xx) keeps it, to go again with
 * the same id: the server counts an id once.
 */
export class Dispatcher {
  sent = 0;
  retries = 0;
  /** Drops counted since the report in flight was made, by reason. */
  pending: Record<string, number> = {};
  /** The report every request carries until a 2xx answers one of them. */
  report: ClientReport | undefined;
  private attempt = 0;
  private blockedUntil = 0;
  private timer: unknown = null;
  private running: Promise<void> | null = null;
  private keepaliveBytes = 0;
  /** When the scheduled pass runs (a sooner one replaces it). */
  private due = 0;
  private stopped = false;
  /** The browser said offline at the last pass (said once per offline spell in debug mode). */
  private offline?: boolean;

  constructor(private readonly d: DispatcherDeps, private readonly o: DispatcherOptions) {}

  /**
   * Called after each enqueue: a full batch goes in a task of its own (never inside the page's
   * click or error handler that produced the event), else within the interval.
   */
  notify(): void {
    const { outbox } = this.d;
    this.schedule(outbox.loose.length >= this.o.maxBatchSize || outbox.bytes >= this.o.maxBatchBytes ? 0 : this.o.flushInterval, false);
  }

  /** Sends what is queued now (unless backing off); resolves when the pass ends, never rejects. */
  flush(): Promise<void> {
    if (this.running) return this.running;
    this.clearTimer();
    this.running = this.pump()
      .catch((e) => this.d.log('error', e))
      .then(() => {
        this.running = null;
      });
    return this.running;
  }

  /** Page hide: every batch that fits the keepalive budget goes now; all stay stored until a 2xx. */
  flushOnHide(): void {
    const now = this.d.timers.now();
    if (!this.d.online() || this.blockedUntil > now || this.d.breaker.state(now) === 'open') return;
    for (let guard = 0; guard < 20; guard++) {
      const batch = this.d.outbox.next(this.o.maxBatchSize, Math.min(this.o.maxBatchBytes, KEEPALIVE_BYTES - this.keepaliveBytes));
      if (!batch || batch.bytes > KEEPALIVE_BYTES - this.keepaliveBytes) break;
      void this.attemptBatch(batch, true);
    }
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  start(): void {
    this.stopped = false;
    this.schedule(this.o.flushInterval, false);
  }

  private async pump(): Promise<void> {
    const { outbox, budget, breaker, timers } = this.d;
    for (;;) {
      if (this.stopped) return;
      const now = timers.now();
      this.d.drop('expired', outbox.expire(now - this.o.dedupWindow));
      if (!outbox.length) return;
      // The `online` event calls flush again.
      const offline = !this.d.online();
      if (offline && !this.offline) this.d.log('offline: holding', outbox.length);
      if ((this.offline = offline)) return;
      if (this.blockedUntil > now) return this.schedule(this.blockedUntil - now, true);
      const retry = this.attempt > 0;
      if (retry && !budget.canRetry(now)) return this.schedule(budget.waitMs(now), true);
      if (!breaker.allow(now)) return this.schedule(Math.max(1, breaker.retryIn(now)), true);
      const batch = outbox.next(this.o.maxBatchSize, this.o.maxBatchBytes);
      if (!batch) return;
      if (retry) {
        budget.recordRetry(now);
        this.retries++;
      } else budget.recordSend(now);
      await this.attemptBatch(batch, false);
    }
  }

  /** One request for a batch; its answer decides what happens to it. */
  private async attemptBatch(batch: Batch, plain: boolean): Promise<void> {
    batch.busy = true;
    this.d.save();
    const keepalive = this.keepaliveBytes + batch.bytes <= KEEPALIVE_BYTES;
    if (keepalive) this.keepaliveBytes += batch.bytes;
    let report = this.report;
    if (!report && Object.keys(this.pending)[0]) {
      report = this.report = { id: uuid(), dropped: this.pending };
      this.pending = {};
    }
    let res: SendResult;
    try {
      res = await this.d.transport(batch.items.map((it) => it.e), keepalive, plain, report);
    } finally {
      if (keepalive) this.keepaliveBytes -= batch.bytes;
      batch.busy = false;
    }
    // Any 2xx means the server has the report (counted, a duplicate or ignored): it is forgotten.
    if (classify(res.status) === 'ok' && this.report === report) this.report = undefined;
    this.answer(batch, res);
  }

  private answer(batch: Batch, res: SendResult): void {
    const { outbox, breaker, timers, log } = this.d;
    const after = timers.now();
    const n = batch.items.length;
    // (No wait asked: blockedUntil at most now, which blocks nothing.)
    this.blockedUntil = Math.max(this.blockedUntil, after + res.rateWait);
    const verdict = classify(res.status);
    // Debug: the server's answer (its verdicts); full builds print them per event, in one line.
    log('sent', n, res.status, extensions.verdicts ? extensions.verdicts(batch, res.j) : res.j);
    if (verdict === 'retry') {
      if (res.status || this.d.online()) breaker.failure(after);
      // (The rate-limit wait is in blockedUntil already.)
      const wait = Math.max(backoffDelay(this.attempt, 1000, 60000, this.d.rng), res.retryAfter);
      this.attempt++;
      this.blockedUntil = Math.max(this.blockedUntil, after + wait);
      this.schedule(this.blockedUntil - after, true);
      return;
    }
    breaker.success();
    this.attempt = 0;
    if (verdict === 'split' && outbox.split(batch)) return void this.flush();
    outbox.done(batch);
    if (verdict === 'ok') {
      const rejected = ((res.j && res.j.rejected) || []).length;
      this.sent += n - rejected;
      this.d.drop('rejected', rejected);
    } else this.d.drop(verdict === 'split' ? 'too_large' : 'refused_' + res.status, n);
  }

  private schedule(ms: number, force: boolean): void {
    if (this.stopped || (this.timer !== null && !force && ms >= this.due - this.d.timers.now())) return;
    this.due = this.d.timers.now() + ms;
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
