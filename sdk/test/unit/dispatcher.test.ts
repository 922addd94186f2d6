import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CircuitBreaker } from '../../src/breaker';
import { RetryBudget } from '../../src/budget';
import { Dispatcher } from '../../src/dispatcher';
import { EventQueue } from '../../src/queue';
import type { SendResult } from '../../src/transport';
import { FakeTimers, ScriptedTransport, makeEvent, ok, status } from './helpers';

function setup(answers: SendResult[] = [ok()], opts: { budget?: RetryBudget; breaker?: CircuitBreaker } = {}) {
  const timers = new FakeTimers();
  const queue = new EventQueue({ maxCount: 1000, maxBytes: 1e7 });
  const transport = new ScriptedTransport(timers, answers);
  const dropped: Record<string, number> = {};
  const d = new Dispatcher(
    {
      queue,
      transport,
      breaker: opts.breaker || new CircuitBreaker(5, 30000, 300000),
      budget: opts.budget || new RetryBudget(0.2, 5, 60000),
      timers,
      log: () => {},
      rng: () => 0.5,
      drop: (r, n) => void (dropped[r] = (dropped[r] || 0) + n),
    },
    { interval: 5000, maxBatchSize: 50, maxBatchBytes: 60000 },
  );
  const add = (n: number, bytes = 100) => {
    for (let i = 0; i < n; i++) {
      const e = makeEvent();
      queue.push(e, JSON.stringify(e), bytes);
      d.notify();
    }
  };
  return { timers, queue, transport, dropped, d, add };
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
  assert.equal(s.queue.length, 0);
});

test('a batch goes when the byte budget is reached, each batch within it', async () => {
  const s = setup();
  s.add(7, 10000);
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

test('413 splits the batch in halves until it fits; halves are sent at once', async () => {
  const fits = (n: number) => (n > 12 ? status(413) : ok());
  const s = setup([fits as unknown as SendResult]);
  s.add(50);
  await s.timers.advance(10);
  assert.deepEqual(s.transport.sends.map((x) => x.ids.length), [50, 25, 12, 12, 12, 12, 2]);
  assert.equal(s.queue.length, 0);
  assert.equal(new Set(s.transport.sends.slice(2).flatMap((x) => x.ids)).size, 50, 'every event exactly once');
  assert.equal(s.transport.sends.slice(2).flatMap((x) => x.ids).length, 50);
  assert.deepEqual(s.dropped, {});
});

test('a single event refused with 413 is dropped and counted', async () => {
  const s = setup([status(413), ok()]);
  s.add(1);
  await s.timers.advance(5000);
  assert.equal(s.queue.length, 0);
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
  assert.equal(s.queue.length, 0);
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
  const s = setup([ok({ rejected: 2 })]);
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

test('page hide hands queued events to sendBeacon in chunks, skipping the in-flight batch', async () => {
  let release: (r: SendResult) => void = () => {};
  const s = setup();
  s.transport.send = async (events) => {
    s.transport.sends.push({ t: 0, ids: events.map((e) => e.event_id) });
    return new Promise<SendResult>((r) => (release = r));
  };
  s.add(50);
  await s.timers.advance(1);
  s.add(70);
  s.d.flushOnHide();
  assert.deepEqual(s.transport.beacons.map((b) => b.length), [50, 20]);
  assert.equal(s.queue.length, 50, 'only the in-flight batch is left');
  release(ok());
  await s.timers.advance(1);
  assert.equal(s.queue.length, 0);
});

test('when the beacon is refused the events stay queued (and persisted)', () => {
  const s = setup();
  s.transport.beaconOk = false;
  s.add(3);
  s.d.flushOnHide();
  assert.equal(s.queue.length, 3);
});

test('keepalive fallback: events leave the queue only once the server took them', async () => {
  const s = setup();
  s.transport.beaconOk = false;
  s.transport.fallback = Promise.resolve(true);
  s.add(3);
  s.d.flushOnHide();
  assert.equal(s.queue.length, 3);
  await s.timers.advance(1);
  assert.equal(s.queue.length, 0);
});

test('retries are sent without keepalive (only first attempts use the shared quota)', async () => {
  const s = setup([status(503), ok()]);
  const flags: Array<boolean | undefined> = [];
  const send = s.transport.send.bind(s.transport);
  s.transport.send = (events, keepalive) => (flags.push(keepalive), send(events, keepalive));
  s.add(1);
  await s.d.flush();
  await s.timers.advance(5000);
  assert.deepEqual(flags, [true, false]);
});

test('stop cancels timers; flush never rejects', async () => {
  const s = setup();
  s.transport.send = () => Promise.reject(new Error('boom'));
  s.add(1);
  await assert.doesNotReject(s.d.flush());
  s.d.stop();
  assert.equal(s.timers.timerCount, 0);
});
