import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CircuitBreaker } from '../../src/breaker.js';

test('opens after the threshold of consecutive failures', () => {
  const b = new CircuitBreaker(3, 1000, 8000);
  for (let i = 0; i < 2; i++) b.failure(0);
  assert.equal(b.state(0), 'closed');
  assert.ok(b.allow(0));
  b.failure(0);
  assert.equal(b.state(0), 'open');
  assert.equal(b.allow(500), false);
  assert.equal(b.retryIn(500), 500);
});

test('a success resets the failure count', () => {
  const b = new CircuitBreaker(3);
  b.failure(0);
  b.failure(0);
  b.success();
  b.failure(0);
  b.failure(0);
  assert.equal(b.state(0), 'closed');
});

test('half-open lets exactly one probe through after the cooldown', () => {
  const b = new CircuitBreaker(1, 1000, 8000);
  b.failure(0);
  assert.equal(b.allow(999), false);
  assert.equal(b.state(1000), 'half-open');
  assert.equal(b.allow(1000), true);
  assert.equal(b.allow(1001), false, 'second concurrent probe refused');
  b.success();
  assert.equal(b.state(1002), 'closed');
  assert.ok(b.allow(1002));
});

test('a failed probe reopens with the cooldown doubled, up to the maximum', () => {
  const b = new CircuitBreaker(1, 1000, 3000);
  b.failure(0);
  let t = 1000;
  for (const expected of [2000, 3000, 3000]) {
    assert.ok(b.allow(t));
    b.failure(t);
    assert.equal(b.state(t + expected - 1), 'open');
    assert.equal(b.retryIn(t), expected);
    t += expected;
    assert.equal(b.state(t), 'half-open');
  }
  b.allow(t);
  b.success();
  b.failure(t);
  assert.equal(b.retryIn(t), 1000, 'cooldown back to base after closing');
});
