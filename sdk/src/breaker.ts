export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Circuit breaker: after `threshold` consecutive failures it opens and refuses sends for a
 * cooldown; then one probe is let through (half-open). A failed probe reopens it with the
 * cooldown doubled (up to `maxCooldown`); a success closes it.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = -1;
  private cooldown: number;
  private probing = false;

  constructor(
    private readonly threshold = 5,
    private readonly baseCooldown = 30000,
    private readonly maxCooldown = 300000,
  ) {
    this.cooldown = baseCooldown;
  }

  state(now: number): BreakerState {
    if (this.openedAt < 0) return 'closed';
    return this.probing || now - this.openedAt >= this.cooldown ? 'half-open' : 'open';
  }

  /** Whether a request may go now; in half-open state only one probe at a time. */
  allow(now: number): boolean {
    const s = this.state(now);
    if (s === 'closed') return true;
    if (s === 'open' || this.probing) return false;
    this.probing = true;
    return true;
  }

  /** Milliseconds until a probe may go (0 when closed). */
  retryIn(now: number): number {
    return this.openedAt < 0 ? 0 : Math.max(0, this.openedAt + this.cooldown - now);
  }

  success(): void {
    this.failures = 0;
    this.openedAt = -1;
    this.probing = false;
    this.cooldown = this.baseCooldown;
  }

  failure(now: number): void {
    this.failures++;
    if (this.probing) {
      this.probing = false;
      this.cooldown = Math.min(this.maxCooldown, this.cooldown * 2);
      this.openedAt = now;
    } else if (this.openedAt < 0 && this.failures >= this.threshold) {
      this.openedAt = now;
    }
  }
}
