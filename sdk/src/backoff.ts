/**
 * Exponential backoff with full jitter: a delay drawn uniformly from
 * [0, min(cap, base * 2^attempt)). `attempt` counts from 0; `rng` is injectable for tests.
 */
export function backoffDelay(attempt: number, baseMs = 1000, capMs = 60000, rng: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.max(0, Math.min(attempt, 30))));
  const r = rng();
  return Math.floor((r > 0 ? Math.min(r, 0.999999) : 0) * ceiling);
}
