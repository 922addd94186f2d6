import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Outbox } from '../../src/outbox.js';
import type { Persisted } from '../../src/outbox.js';
import { memoryKV } from '../../src/storage.js';
import { ORPHAN_MS, QUEUE_PREFIX, QueueStore, STORE_CAP } from '../../src/store.js';
import { FakeLocks, tick } from './dom.js';
import { item } from './helpers.js';

const persisted = (ids: string[][], loose: string[] = []): string =>
  JSON.stringify({ t: Date.now(), b: ids.map((b) => b.map((id) => ({ event_id: id, timestamp: 1 }))), e: loose.map((id) => ({ event_id: id, timestamp: 1 })) });

test('every page load has a key of its own; written from its claim on, even before the lock is granted', async () => {
  const kv = memoryKV();
  const locks = new FakeLocks();
  const a = new QueueStore(kv, locks, Date.now);
  const b = new QueueStore(kv, locks, Date.now);
  assert.notEqual(a.key, b.key);
  a.save('{"b":[],"e":[]}');
  assert.deepEqual(kv.keys(), [], 'not claimed yet');
  // A busy browser: the lock is granted later than the page hides.
  locks.held.add(a.key);
  let ready = 0;
  a.claim(() => ready++);
  a.save('{"b":[],"e":[]}');
  assert.deepEqual(kv.keys(), [a.key], 'claimed: the queue is written while the grant is pending');
  assert.equal(ready, 0);
  a.unclaim(); // page hide before the grant
  a.save(null);
  assert.deepEqual(kv.keys(), [a.key], 'given up: no more writes, the stored queue stays for the next load');
  locks.release(a.key);
  await tick(1);
  assert.equal(ready, 0, 'a grant after the page gave up runs nothing');
  assert.ok(!locks.held.has(a.key), 'and releases the lock at once, so the next load can adopt the queue');
  const next = new QueueStore(kv, locks, Date.now);
  const got: Persisted[] = [];
  next.claim(() => next.adoptOrphans((p) => got.push(p)));
  await tick(5);
  assert.equal(got.length, 1);
  assert.deepEqual(kv.keys(), []);
});

test("an ownerless queue is adopted by exactly one page; a live page's queue is left alone", async () => {
  const kv = memoryKV();
  const locks = new FakeLocks();
  kv.set(QUEUE_PREFIX + 'gone', persisted([['e1', 'e2']], ['e3']));
  kv.set(QUEUE_PREFIX + 'alive', persisted([], ['e9']));
  locks.held.add(QUEUE_PREFIX + 'alive');
  const taken: Persisted[][] = [[], []];
  const pages = [new QueueStore(kv, locks, Date.now), new QueueStore(kv, locks, Date.now)];
  pages.forEach((p, i) => p.claim(() => p.adoptOrphans((q) => taken[i].push(q))));
  await tick(5);
  const all = taken.flat();
  assert.equal(all.length, 1, 'one adopter');
  assert.deepEqual(all[0].b[0].map((e) => e.event_id), ['e1', 'e2'], 'the frozen batch stays a batch');
  assert.ok(!kv.get(QUEUE_PREFIX + 'gone'));
  assert.ok(kv.get(QUEUE_PREFIX + 'alive'), "the live tab's queue stays");
});

test('without Web Locks, a queue is adopted only once its owner stopped writing it for a minute', () => {
  const kv = memoryKV();
  let now = 1_700_000_000_000;
  kv.set(QUEUE_PREFIX + 'fresh', JSON.stringify({ t: now - 1000, b: [], e: [{ event_id: 'f', timestamp: 1 }] }));
  kv.set(QUEUE_PREFIX + 'stale', JSON.stringify({ t: now - ORPHAN_MS - 1, b: [], e: [{ event_id: 's', timestamp: 1 }] }));
  const s = new QueueStore(kv, null, () => now);
  const got: string[] = [];
  s.claim(() => s.adoptOrphans((p) => got.push(...p.e.map((e) => e.event_id))));
  assert.deepEqual(got, ['s']);
  now += ORPHAN_MS;
  s.adoptOrphans((p) => got.push(...p.e.map((e) => e.event_id)));
  assert.deepEqual(got, ['s', 'f']);
});

test('allowance: the cap less what the other pages hold; purgeAll removes every queue and nothing else', () => {
  const kv = memoryKV();
  kv.set(QUEUE_PREFIX + 'other', 'x'.repeat(100000));
  kv.set('host-key', 'y'.repeat(100000));
  const s = new QueueStore(kv, null, Date.now);
  assert.ok(s.allowance() <= STORE_CAP - 100000 && s.allowance() > STORE_CAP - 100200);
  s.purgeAll();
  assert.deepEqual(kv.keys(), ['host-key']);
});

test('outbox: bounded (oldest loose first, counted), expiry by age, 413 split keeps order, absorb keeps batches', () => {
  const o = new Outbox({ count: 5, bytes: 1e6 });
  for (let i = 0; i < 7; i++) o.push(item({ name: 'n' + i, timestamp: 1000 + i }));
  assert.equal(o.length, 5);
  const b = o.next(3, 1e6) as NonNullable<ReturnType<Outbox['next']>>;
  assert.deepEqual(b.items.map((it) => it.e.name), ['n2', 'n3', 'n4']);
  assert.equal(o.next(3, 1e6), b, 'the frozen batch comes back until answered');
  assert.ok(o.split(b));
  assert.deepEqual(o.batches.map((x) => x.items.map((it) => it.e.name)), [['n2', 'n3'], ['n4']]);
  assert.equal(o.expire(1004), 2, 'the first batch holds older events: dropped whole');
  const p = JSON.parse(o.toJSON()) as Persisted;
  const other = new Outbox({ count: 100, bytes: 1e6 });
  other.absorb(p, (e) => ({ e, j: JSON.stringify(e), b: 10 }));
  assert.deepEqual(other.batches.map((x) => x.items.map((it) => it.e.name)), [['n4']]);
  assert.deepEqual(other.loose.map((it) => it.e.name), ['n5', 'n6']);
  assert.equal(other.bytes, 30);
});
