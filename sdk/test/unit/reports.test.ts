// Client reports: the drops counted since the last acknowledged report ride on the next batch,
// under an id kept until a 2xx answers a request that carried it; the debug mode's verdicts.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { CircuitBreaker } from '../../src/breaker.js';
import { RetryBudget } from '../../src/budget.js';
import { Client } from '../../src/client.js';
import { Dispatcher } from '../../src/dispatcher.js';
import { Outbox } from '../../src/outbox.js';
import type { Batch } from '../../src/outbox.js';
import type { ClientReport, SendResult, Transport } from '../../src/transport.js';
import { verdicts } from '../../src/verdicts.js';
import { installDom, tick } from './dom.js';
import type { Dom } from './dom.js';
import { FakeTimers, ScriptedTransport, item, ok, status } from './helpers.js';

const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function setup(answers: Array<SendResult | ((n: number) => SendResult)> = [ok()], online: () => boolean = () => true, fn?: Transport) {
  const timers = new FakeTimers();
  const outbox = new Outbox({ count: 1000, bytes: 1e7 });
  const transport = new ScriptedTransport(timers, answers);
  const logs: unknown[][] = [];
  const d: Dispatcher = new Dispatcher(
    {
      outbox,
      transport: fn || transport.fn,
      breaker: new CircuitBreaker(5, 30000, 300000),
      budget: new RetryBudget(0.2, 5, 60000),
      timers,
      log: (...a) => void logs.push(a),
      rng: () => 0.5,
      online,
      save: () => {},
      // As the client does: counted for the next report.
      drop: (r, n) => void (n && (d.pending[r] = (d.pending[r] || 0) + n)),
    },
    { flushInterval: 5000, maxBatchSize: 50, maxBatchBytes: 30000, dedupWindow: 86400000 },
  );
  const add = (n: number) => {
    for (let i = 0; i < n; i++) outbox.push(item({ timestamp: timers.now() }));
  };
  /** Sends what is queued once any backoff is over. */
  const send = async () => {
    await timers.advance(70000);
    await d.flush();
  };
  return { timers, outbox, transport, logs, d, add, send };
}

test('no drops, no report: a batch carries none', async () => {
  const s = setup();
  s.add(2);
  await s.d.flush();
  assert.equal(s.transport.sends.length, 1);
  assert.equal(s.transport.sends[0].report, undefined);
});

test('drops ride on the next batch as a report (a lowercase UUID v4 id), forgotten after the 2xx', async () => {
  const s = setup();
  s.d.pending.queue_full = 3;
  s.d.pending.expired = 1;
  s.add(1);
  await s.d.flush();
  const r = s.transport.sends[0].report;
  assert.ok(r);
  assert.match(r.id, UUID4);
  assert.deepEqual(r.dropped, { queue_full: 3, expired: 1 });
  assert.equal(s.d.report, undefined, 'forgotten once a 2xx carried it');
  assert.deepEqual(s.d.pending, {});
  s.add(1);
  await s.send();
  assert.equal(s.transport.sends[1].report, undefined, 'not sent twice');
});

test('a failed send (503, then a lost answer) keeps the report: resent with the same id until a 2xx', async () => {
  const s = setup([status(503), status(0), ok()]);
  s.d.pending.opt_out = 2;
  s.add(1);
  await s.d.flush(); // 503
  await s.send(); // network error: the request may have reached the server, its answer did not reach us
  await s.send(); // 202
  const reports = s.transport.sends.map((x) => x.report);
  assert.equal(reports.length, 3);
  assert.ok(reports.every((r) => r && r.id === reports[0]?.id), 'one id: ' + JSON.stringify(reports));
  assert.ok(reports.every((r) => r && r.dropped.opt_out === 2));
  assert.equal(s.d.report, undefined);
});

test('a 4xx (a batch refused whole) keeps the report for the next batch, same id; its own drop goes to the next report', async () => {
  const s = setup([status(400), ok()]);
  s.d.pending.sampled = 5;
  s.add(2);
  await s.d.flush(); // 400: the batch is dropped (refused_400), the report stays
  const first = s.transport.sends[0].report;
  assert.deepEqual(first?.dropped, { sampled: 5 });
  assert.deepEqual(s.d.pending, { refused_400: 2 }, 'counted while the report was in flight: next report');
  s.add(1);
  await s.send();
  assert.equal(s.transport.sends[1].report?.id, first?.id);
  assert.deepEqual(s.transport.sends[1].report?.dropped, { sampled: 5 }, 'the report is not changed while in flight');
  s.add(1);
  await s.send();
  const next = s.transport.sends[2].report;
  assert.ok(next && next.id !== first?.id);
  assert.deepEqual(next.dropped, { refused_400: 2 });
});

test('drops counted while a report is in flight go to the next report, not into the one in flight', async () => {
  const s = setup();
  s.transport.hold = true;
  s.d.pending.rate_limited = 1;
  s.add(1);
  const p = s.d.flush();
  await tick(1);
  s.d.pending.queue_full = 4; // meanwhile
  s.transport.release();
  await p;
  s.transport.hold = false;
  assert.deepEqual(s.transport.sends[0].report?.dropped, { rate_limited: 1 });
  s.add(1);
  await s.send();
  const next = s.transport.sends[1].report;
  assert.deepEqual(next?.dropped, { queue_full: 4 });
  assert.notEqual(next?.id, s.transport.sends[0].report?.id);
});

test('page hide: every keepalive request carries the one report in flight (the server counts its id once)', async () => {
  const s = setup([status(503)]);
  s.d.pending.store_full = 7;
  s.add(120); // three batches
  s.d.flushOnHide();
  await tick(1);
  assert.ok(s.transport.sends.length >= 2);
  const ids = new Set(s.transport.sends.map((x) => x.report?.id));
  assert.equal(ids.size, 1);
  assert.ok(s.transport.sends.every((x) => x.report?.dropped.store_full === 7));
});

test('a late 2xx for a request that carried an older report does not forget the newer one', async () => {
  // Requests answered by hand, in the order the test picks.
  const waiting: Array<{ report?: ClientReport; answer: (r: SendResult) => void }> = [];
  const s = setup([], () => true, (_events, _keepalive, _plain, report) => new Promise((answer) => waiting.push({ report, answer })));
  s.d.pending.a = 1;
  s.add(60); // two batches
  s.d.flushOnHide(); // both go at once, both carrying the first report
  await tick(1);
  assert.equal(waiting.length, 2);
  const first = waiting[0].report;
  assert.equal(waiting[1].report, first);
  waiting[0].answer(ok()); // the first 2xx: the report is forgotten
  await tick(1);
  assert.equal(s.d.report, undefined);
  s.d.pending.b = 2;
  s.add(1);
  const p = s.d.flush(); // a new batch with a new report
  await tick(1);
  const second = waiting[2].report;
  assert.ok(second && second.id !== first?.id);
  waiting[1].answer(ok()); // the late 2xx of a request that carried the first report
  await tick(1);
  assert.equal(s.d.report, second, 'still in flight');
  waiting[2].answer(ok());
  await p;
  assert.equal(s.d.report, undefined);
});

test('debug: offline is said once per offline spell, not at every pass', async () => {
  let online = false;
  const s = setup([ok()], () => online);
  s.add(2);
  for (let i = 0; i < 5; i++) {
    await s.d.flush();
    s.d.notify();
    await s.timers.advance(6000);
  }
  const said = () => s.logs.filter((l) => l[0] === 'offline: holding').length;
  assert.equal(said(), 1);
  assert.deepEqual(s.logs.find((l) => l[0] === 'offline: holding'), ['offline: holding', 2]);
  online = true;
  await s.d.flush();
  assert.equal(s.transport.sends.length, 1);
  online = false;
  s.add(1);
  await s.d.flush();
  await s.d.flush();
  assert.equal(said(), 2, 'a new spell is said again');
});

test('debug verdicts: accepted count, request id, each refused event by type and id with its code, the report verdict', () => {
  const batch = { items: [item({ type: 'click' }), item({ type: 'custom' }), item({ type: 'error' })], bytes: 0, busy: false } as Batch;
  const [a, , c] = batch.items.map((it) => it.e.event_id);
  assert.equal(
    verdicts(batch, { accepted: 1, rejected: [{ index: 0, code: 'invalid_event' }, { index: 2, code: 'too_old' }], request_id: 'req-1', client_report: 'counted' }),
    `accepted 1, request req-1, rejected click ${a}: invalid_event, rejected error ${c}: too_old, client report counted`,
  );
  assert.equal(verdicts(batch, { accepted: 3, rejected: [], request_id: 'req-2' }), 'accepted 3, request req-2');
  // A 400 when no event was acceptable: the rejections are the error's details.
  assert.equal(
    verdicts(batch, { error: { code: 'no_acceptable_events', request_id: 'req-3', details: [{ index: 1, code: 'invalid_event' }] } }),
    `no_acceptable_events, request req-3, rejected custom ${batch.items[1].e.event_id}: invalid_event`,
  );
  assert.equal(verdicts(batch, { error: { code: 'unavailable', request_id: 'r', details: { limit: 'x' } } }), 'unavailable, request r');
  assert.equal(verdicts(batch, undefined), '');
});

// --- the client: which drops are counted, and what the request body carries ---

let dom: Dom;
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.shutdown();
  if (dom) await dom.close();
});
const NONE = { clicks: false, errors: false, network: false, navigation: false, pageViews: false };
function start(opts: Record<string, unknown> = {}) {
  const c = new Client({ apiKey: 'k', endpoint: 'https://api.test', flushInterval: 100, capture: NONE, ...opts });
  clients.push(c);
  return c;
}

test('client: sampled-out events are counted as `sampled`', () => {
  dom = installDom();
  const c = start({ sampleRate: 0 });
  c.track('a');
  c.track('b');
  assert.equal(c.stats().dropped.sampled, 2);
  assert.equal(c.stats().queued, 0);
});

test('client: rate-limited errors are counted (`rate_limited`) and reported with the next batch', async () => {
  dom = installDom();
  const c = start();
  for (let i = 0; i < 13; i++) c.captureException(new Error('distinct ' + i));
  assert.equal(c.stats().dropped.rate_limited, 3);
  await c.flush();
  assert.deepEqual(dom.requests[0].body.client_report?.dropped, { rate_limited: 3 });
  assert.match(dom.requests[0].body.client_report?.id || '', UUID4);
});

test('client: an opt-out purge is counted (`opt_out`) and reported once the user opts in again', async () => {
  dom = installDom();
  dom.answer = 503;
  const c = start();
  c.track('a');
  c.track('b');
  await c.flush(); // 503: the batch stays
  assert.equal(dom.requests[0].body.client_report, undefined);
  c.optOut();
  assert.equal(c.stats().dropped.opt_out, 2);
  assert.equal(c.stats().queued, 0);
  const n = dom.requests.length;
  await tick(1200); // the backoff after the 503
  assert.equal(dom.requests.length, n, 'nothing is sent while opted out');
  dom.answer = 202;
  c.optIn();
  c.track('after');
  await tick(1200);
  await c.flush();
  const body = dom.requests[dom.requests.length - 1].body;
  assert.deepEqual(body.events.map((e) => e.name), ['after']);
  assert.deepEqual(body.client_report?.dropped, { opt_out: 2 });
  assert.deepEqual(c.stats().dropped, { opt_out: 2 }, 'stats count everything ever dropped');
});

test('client: a page-hide (text/plain) request carries the report too; stats() keeps counting after reports are acknowledged', async () => {
  dom = installDom();
  const c = start({ maxQueueSize: 2 });
  c.track('a');
  c.track('b');
  c.track('c'); // a is dropped: queue_full
  window.dispatchEvent(new Event('pagehide'));
  await tick(5);
  const hide = dom.requests[0];
  assert.equal((hide.init?.headers as Record<string, string>)['Content-Type'], 'text/plain');
  assert.deepEqual(hide.body.client_report?.dropped, { queue_full: 1 });
  c.track('d');
  await c.flush();
  assert.equal(dom.requests[1].body.client_report, undefined, 'acknowledged: not sent again');
  assert.deepEqual(c.stats().dropped, { queue_full: 1 });
});

test('client, debug: one line per request with the status and the server answer', async () => {
  dom = installDom();
  const lines: unknown[][] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void lines.push(a);
  try {
    const c = start({ debug: true });
    c.track('a');
    await c.flush();
  } finally {
    console.log = orig;
  }
  const sent = lines.filter((l) => l[1] === 'sent');
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0], ['[observer]', 'sent', 1, 202, { accepted: 1, rejected: [] }], 'the core build prints the answer as it came');
});
