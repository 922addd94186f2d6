import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from '../../src/backoff.js';

test('full jitter: delay is rng * min(cap, base * 2^attempt)', () => {
  assert.equal(backoffDelay(0, 1000, 60000, () => 0.5), 500);
  assert.equal(backoffDelay(1, 1000, 60000, () => 0.5), 1000);
  assert.equal(backoffDelay(3, 1000, 60000, () => 0.5), 4000);
  assert.equal(backoffDelay(3, 1000, 60000, () => 0), 0);
});

test('ceiling grows exponentially and stops at the cap', () => {
  const max = (a: number) => backoffDelay(a, 1000, 60000, () => 0.999999);
  assert.ok(max(0) < 1000 && max(0) >= 999);
  assert.ok(max(5) < 32000 && max(5) >= 31999);
  assert.ok(max(6) < 60000 && max(6) >= 59999);
  assert.ok(max(1000) < 60000, 'huge attempt numbers do not overflow');
});

test('delays stay within [0, ceiling) for any rng output, even a broken one', () => {
  for (const r of [-1, 0, 0.3, 1, 2, NaN]) {
    const d = backoffDelay(2, 100, 1000, () => r);
    assert.ok(d >= 0 && d < 400, `rng ${r} -> ${d}`);
  }
});

test('default rng is Math.random: values spread over the whole range', () => {
  const seen = Array.from({ length: 200 }, () => backoffDelay(4, 1000));
  assert.ok(Math.min(...seen) < 4000 && Math.max(...seen) > 12000);
  assert.ok(seen.every((d) => d >= 0 && d < 16000));
});
