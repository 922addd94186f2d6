/**
 * Retry budget over a sliding window: retries may not exceed `reserve + ratio * first sends`
 * in any `windowMs`. The small reserve lets a quiet page recover from a blip; under real
 * traffic retries stay a fraction of normal traffic, so a struggling server is not hammered.
 */
export class RetryBudget {
  private sends: number[] = [];
  private retried: number[] = [];

  constructor(
    private readonly ratio = 0.2,
    private readonly reserve = 5,
    private readonly windowMs = 60000,
  ) {}

  recordSend(now: number): void {
    this.push(this.sends, now);
  }

  canRetry(now: number): boolean {
    this.prune(now);
    return this.retried.length < this.reserve + this.ratio * this.sends.length;
  }

  recordRetry(now: number): void {
    this.push(this.retried, now);
  }

  /** Milliseconds until the oldest retry leaves the window. */
  waitMs(now: number): number {
    this.prune(now);
    return this.retried.length ? Math.max(1, this.retried[0] + this.windowMs - now) : 0;
  }

  private push(list: number[], now: number): void {
    this.prune(now);
    list.push(now);
    if (list.length > 10000) list.shift();
  }

  private prune(now: number): void {
    const from = now - this.windowMs;
    for (const list of [this.sends, this.retried]) while (list.length && list[0] <= from) list.shift();
  }
}
