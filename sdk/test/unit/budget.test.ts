import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RetryBudget } from '../../src/budget.js';

test('a quiet page gets the small reserve of retries', () => {
  const b = new RetryBudget(0.2, 2, 60000);
  assert.ok(b.canRetry(0));
  b.recordRetry(0);
  assert.ok(b.canRetry(0));
  b.recordRetry(0);
  assert.equal(b.canRetry(0), false);
  assert.equal(b.waitMs(10000), 50000);
});

test('retries never exceed reserve + ratio of first sends in the window', () => {
  const b = new RetryBudget(0.1, 0, 60000);
  let retries = 0;
  for (let i = 0; i < 1000; i++) {
    const t = i * 10;
    b.recordSend(t);
    while (b.canRetry(t)) {
      b.recordRetry(t);
      retries++;
    }
  }
  assert.ok(retries <= 100, `retries ${retries} > 10% of 1000 sends`);
  assert.ok(retries >= 99);
});

test('budget refills as old retries leave the window', () => {
  const b = new RetryBudget(0, 1, 1000);
  b.recordRetry(0);
  assert.equal(b.canRetry(999), false);
  assert.equal(b.canRetry(1000), true);
  assert.equal(b.waitMs(1000), 0);
});
