const MAX_WAIT = 10 * 60000;

const clamp = (ms: number) => (ms > 0 ? Math.min(MAX_WAIT, Math.ceil(ms)) : 0);

/** `Retry-After` as milliseconds to wait: delta seconds or an HTTP date. */
export function retryAfterMs(value: string | null | undefined, now: number): number {
  if (!value) return 0;
  // Delta seconds (`Number` of a date is NaN), else an HTTP date.
  const v = value.trim();
  if (+v >= 0) return clamp(+v * 1000);
  const t = Date.parse(v);
  return t === t ? clamp(t - now) : 0;
}

/**
 * How long to hold sends after an answer whose `X-RateLimit-Remaining` is 0: until
 * `X-RateLimit-Reset` (epoch seconds; small values are read as seconds from now).
 */
export function rateLimitWaitMs(remaining: string | null | undefined, reset: string | null | undefined, now: number): number {
  if (remaining == null || reset == null || Number(remaining) > 0) return 0;
  const r = Number(reset);
  if (!(r >= 0)) return 0;
  return clamp(r > 1e9 ? r * 1000 - now : r * 1000);
}
