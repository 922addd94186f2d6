import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CircuitBreaker } from '../../src/breaker.js';
import { RetryBudget } from '../../src/budget.js';
import { Dispatcher, KEEPALIVE_BYTES } from '../../src/dispatcher.js';
import { Outbox } from '../../src/outbox.js';
import type { SendResult } from '../../src/transport.js';
import { FakeTimers, ScriptedTransport, item, ok, status } from './helpers.js';

type Answer = SendResult | ((n: number) => SendResult);

function setup(answers: Answer[] = [ok()], opts: { budget?: RetryBudget; breaker?: CircuitBreaker; online?: () => boolean } = {}) {
  const timers = new FakeTimers();
  const outbox = new Outbox({ count: 1000, bytes: 1e7 });
  const transport = new ScriptedTransport(timers, answers);
  const dropped: Record<string, number> = {};
  let saves = 0;
  const d = new Dispatcher(
    {
      outbox,
      transport: transport.fn,
      breaker: opts.breaker || new CircuitBreaker(5, 30000, 300000),
      budget: opts.budget || new RetryBudget(0.2, 5, 60000),
      timers,
      log: () => {},
      rng: () => 0.5,
      online: opts.online || (() => true),
      save: () => void saves++,
      drop: (r, n) => void (n && (dropped[r] = (dropped[r] || 0) + n)),
    },
    { flushInterval: 5000, maxBatchSize: 50, maxBatchBytes: 30000, dedupWindow: 86400000 },
  );
  const add = (n: number, bytes?: number, extra = {}) => {
    for (let i = 0; i < n; i++) {
      outbox.push(item({ timestamp: timers.now(), ...extra }, bytes));
      d.notify();
    }
  };
  return { timers, outbox, transport, dropped, d, add, saves: () => saves };
}

test('a batch goes at 50 events, without waiting for the interval', async () => {
  const s = setup();
  s.add(49);
  await s.timers.advance(10);
  assert.equal(s.transport.sends.length, 0);
  s.add(1);
  await s.timers.advance(10);
  assert.equal(s.transport.sends.length, 1);
  assert.equal(s.transport.sends[0].ids.length, 50);
  assert.equal(s.outbox.length, 0);
});

test('a batch goes when the byte budget is reached, each batch within it', async () => {
  const s = setup();
  s.add(7, 5000);
  await s.timers.advance(10);
  assert.deepEqual(s.transport.sends.map((x) => x.ids.length), [5, 2]);
});

test('otherwise every 5 seconds', async () => {
  const s = setup();
  s.add(3);
  await s.timers.advance(4999);
  assert.equal(s.transport.sends.length, 0);
  await s.timers.advance(1);
  assert.equal(s.transport.sends.length, 1);
  assert.equal(s.d.sent, 3);
});

test('an attempted batch is frozen: every resend carries the same events in the same order', async () => {
  const s = setup([status(503), status(0), status(500), ok()], { breaker: new CircuitBreaker(1e9) });
  s.add(3);
  await s.d.flush();
  s.add(4); // arrives while the first batch is retried: never mixed into it
  await s.timers.advance(60000);
  const first = s.transport.sends[0].ids;
  assert.deepEqual(s.transport.sends.slice(0, 4).map((x) => x.ids), [first, first, first, first]);
  assert.equal(s.transport.sends[4].ids.length, 4);
  assert.ok(s.saves() >= 2, 'the frozen batch is persisted before it is sent');
  assert.equal(s.outbox.length, 0);
});

test('413 splits the batch in halves until it fits; every event goes exactly once', async () => {
  const fits = (n: number) => (n > 12 ? status(413) : ok());
  const s = setup([fits]);
  s.add(50);
  await s.timers.advance(10);
  const accepted = s.transport.sends.filter((x) => x.ids.length <= 12).flatMap((x) => x.ids);
  assert.equal(accepted.length, 50);
  assert.equal(new Set(accepted).size, 50);
  assert.equal(s.outbox.length, 0);
  assert.deepEqual(s.dropped, {});
});

test('a single event refused with 413 is dropped and counted', async () => {
  const s = setup([status(413), ok()]);
  s.add(1);
  await s.timers.advance(5000);
  assert.equal(s.outbox.length, 0);
  assert.deepEqual(s.dropped, { too_large: 1 });
});

for (const code of [400, 401, 403, 422]) {
  test(`${code} is never retried: the batch is dropped and counted`, async () => {
    const s = setup([status(code), ok()]);
    s.add(2);
    await s.timers.advance(120000);
    assert.equal(s.transport.sends.length, 1);
    assert.deepEqual(s.dropped, { ['refused_' + code]: 2 });
  });
}

test('network errors, 408, 429 and 5xx are retried with backoff, honouring Retry-After', async () => {
  const s = setup([status(0), status(503, { retryAfter: 3000 }), status(408), status(429, { retryAfter: 2000 }), ok()]);
  s.add(1);
  await s.d.flush();
  await s.timers.advance(60000);
  const t = s.transport.sends.map((x) => x.t - s.transport.sends[0].t);
  // rng 0.5: backoff 500, 1000, 2000, 4000 ms; Retry-After raises the second and fourth waits.
  assert.deepEqual(t, [0, 500, 3500, 5500, 9500]);
  assert.equal(s.outbox.length, 0);
  assert.equal(s.d.retries, 4);
});

test('X-RateLimit-Remaining 0 holds the next send until the reset', async () => {
  const s = setup([ok({ rateWait: 8000 }), ok()]);
  s.add(1);
  await s.d.flush();
  s.add(1);
  await s.d.flush();
  await s.timers.advance(7000);
  assert.equal(s.transport.sends.length, 1);
  await s.timers.advance(1000);
  assert.equal(s.transport.sends.length, 2);
});

test('202 with per-event rejections counts them as dropped', async () => {
  const s = setup([ok({ j: { accepted: 3, rejected: [{ index: 0, code: 'invalid_event' }, { index: 2, code: 'invalid_event' }] } })]);
  s.add(5);
  await s.d.flush();
  assert.deepEqual(s.dropped, { rejected: 2 });
  assert.equal(s.d.sent, 3);
});

test('the circuit breaker stops sending after repeated failures and probes later', async () => {
  const s = setup([status(500)], { budget: new RetryBudget(0, 1000, 60000) });
  s.add(1);
  await s.d.flush();
  // rng 0.5: failures at 0, 500, 1500, 3500, 7500 ms; the 5th opens it until 37500.
  await s.timers.advance(20000);
  assert.equal(s.transport.sends.length, 5, 'opened after 5 failures');
  await s.timers.advance(17000);
  assert.equal(s.transport.sends.length, 5, 'nothing while open');
  await s.timers.advance(1000);
  assert.equal(s.transport.sends.length, 6, 'one probe after the cooldown');
});

test('the retry budget caps retries even when the server keeps failing', async () => {
  const s = setup([status(503)], { breaker: new CircuitBreaker(1e9), budget: new RetryBudget(0, 2, 60000) });
  s.add(1);
  await s.d.flush();
  await s.timers.advance(59000);
  assert.equal(s.transport.sends.length, 3, 'first send + reserve of 2 retries');
  assert.equal(s.d.retries, 2);
});

test('offline: nothing is attempted (and the breaker is not fed) until the browser is back online', async () => {
  let online = false;
  const s = setup([ok()], { online: () => online });
  s.add(3);
  await s.timers.advance(60000);
  s.d.flushOnHide();
  assert.equal(s.transport.sends.length, 0);
  assert.equal(s.outbox.length, 3);
  online = true;
  await s.d.flush(); // what the `online` event does
  assert.equal(s.transport.sends.length, 1);
  assert.equal(s.outbox.length, 0);
});

test('page hide: keepalive text/plain requests within the 64 KiB budget; events stay until a 2xx', async () => {
  const s = setup();
  s.transport.hold = true;
  s.add(120, 1000);
  await s.timers.advance(1); // the first full batch (29 events, 30 KB) is in flight
  s.d.flushOnHide();
  const hide = s.transport.sends.slice(1);
  assert.ok(hide.length >= 1 && hide.every((x) => x.plain && x.keepalive));
  const inflight = s.transport.sends.reduce((n, x) => n + x.ids.length * 1001, 0);
  assert.ok(inflight <= KEEPALIVE_BYTES, `keepalive bytes in flight ${inflight}`);
  assert.equal(s.outbox.length, 120, 'nothing leaves before an answer');
  s.transport.release();
  await s.timers.advance(1);
  assert.equal(s.outbox.length, 120 - s.transport.sends.slice(0, 1 + hide.length).reduce((n, x) => n + x.ids.length, 0));
});

test('page hide: a 5xx keeps the events (frozen) for the next attempt or the next page', async () => {
  const s = setup([status(503), ok()]);
  s.add(3);
  s.d.flushOnHide();
  await s.timers.advance(1);
  assert.equal(s.outbox.length, 3);
  assert.equal(s.outbox.batches.length, 1, 'still the frozen batch');
  const ids = s.transport.sends[0].ids;
  await s.timers.advance(60000);
  assert.deepEqual(s.transport.sends[1].ids, ids);
  assert.equal(s.outbox.length, 0);
});

test('while backing off or with the breaker open, a hide sends nothing: storage keeps the events', async () => {
  const s = setup([status(503, { retryAfter: 30000 })]);
  s.add(2);
  await s.d.flush();
  s.d.flushOnHide();
  assert.equal(s.transport.sends.length, 1);
  assert.equal(s.outbox.length, 2);
});

test('events older than the dedup window are dropped and counted, not resent', async () => {
  const s = setup([status(503)], { breaker: new CircuitBreaker(1e9), budget: new RetryBudget(1, 1e6, 60000) });
  s.add(2);
  await s.d.flush();
  await s.timers.advance(86400000 + 120000);
  assert.equal(s.outbox.length, 0);
  assert.deepEqual(s.dropped, { expired: 2 });
});

test('stop cancels timers; flush never rejects', async () => {
  const s = setup();
  s.transport.fn = () => Promise.reject(new Error('boom'));
  (s.d as unknown as { d: { transport: unknown } }).d.transport = s.transport.fn;
  s.add(1);
  await assert.doesNotReject(s.d.flush());
  s.d.stop();
  assert.equal(s.timers.timerCount, 0);
});
