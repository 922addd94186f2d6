import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rateLimitWaitMs, retryAfterMs } from '../../src/ratelimit.js';

const now = Date.parse('2025-01-01T00:00:00Z');

test('Retry-After in seconds or as an HTTP date', () => {
  assert.equal(retryAfterMs('2', now), 2000);
  assert.equal(retryAfterMs('0.5', now), 500);
  assert.equal(retryAfterMs(new Date(now + 3000).toUTCString(), now), 3000);
  assert.equal(retryAfterMs(null, now), 0);
  assert.equal(retryAfterMs('soon', now), 0);
  assert.equal(retryAfterMs('-5', now), 0);
  assert.equal(retryAfterMs('999999', now), 600000, 'capped at 10 minutes');
});

test('X-RateLimit-Remaining 0 waits until X-RateLimit-Reset (epoch seconds)', () => {
  assert.equal(rateLimitWaitMs('0', String(now / 1000 + 7), now), 7000);
  assert.equal(rateLimitWaitMs('3', String(now / 1000 + 7), now), 0, 'requests left: no wait');
  assert.equal(rateLimitWaitMs('0', String(now / 1000 - 7), now), 0, 'reset in the past');
  assert.equal(rateLimitWaitMs('0', '4', now), 4000, 'small values read as seconds from now');
  assert.equal(rateLimitWaitMs(null, null, now), 0);
  assert.equal(rateLimitWaitMs('0', 'x', now), 0);
});
