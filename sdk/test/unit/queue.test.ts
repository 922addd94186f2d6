import assert from 'node:assert/strict';
import { test } from 'node:test';
import { queueStore } from '../../src/persist';
import { EventQueue } from '../../src/queue';
import { memoryKV } from '../../src/storage';
import { makeEvent } from './helpers';

const add = (q: EventQueue, bytes = 10) => {
  const e = makeEvent();
  return { e, dropped: q.push(e, JSON.stringify(e), bytes) };
};

test('bounded in count: the oldest are dropped first, and counted', () => {
  const q = new EventQueue({ maxCount: 3, maxBytes: 1e6 });
  const evs = [1, 2, 3, 4, 5].map(() => add(q));
  assert.equal(q.length, 3);
  assert.equal(q.dropped, 2);
  assert.deepEqual(q.peek(10, 1e6).map((e) => e.event_id), evs.slice(2).map((x) => x.e.event_id));
  assert.equal(evs[3].dropped, 1);
});

test('bounded in bytes', () => {
  const q = new EventQueue({ maxCount: 100, maxBytes: 100 });
  for (let i = 0; i < 5; i++) add(q, 30);
  assert.equal(q.length, 3);
  assert.equal(q.bytes, 90);
  assert.equal(q.dropped, 2);
});

test('peek respects count and byte budgets but always returns one event', () => {
  const q = new EventQueue({ maxCount: 100, maxBytes: 1e6 });
  for (let i = 0; i < 10; i++) add(q, 100);
  assert.equal(q.peek(4, 1e6).length, 4);
  assert.equal(q.peek(50, 350).length, 3);
  assert.equal(q.peek(50, 10).length, 1);
  const skip = new Set(q.peek(2, 1e6).map((e) => e.event_id));
  assert.equal(q.peek(50, 1e6, skip).length, 8);
});

test('remove takes out exactly the answered events; onChange fires for persistence', () => {
  let changes = 0;
  const q = new EventQueue({ maxCount: 100, maxBytes: 1e6 }, () => changes++);
  const a = add(q).e;
  const b = add(q).e;
  q.remove(new Set([a.event_id, 'unknown']));
  assert.equal(q.length, 1);
  assert.equal(q.bytes, 10);
  assert.equal(JSON.parse(q.toJSON())[0].event_id, b.event_id);
  assert.equal(changes, 3);
});

test('survives a reload: saved to storage under the tab id and loaded back', () => {
  const local = memoryKV();
  const session = memoryKV();
  const q = new EventQueue({ maxCount: 100, maxBytes: 1e6 });
  const ids = [add(q).e, add(q).e].map((e) => e.event_id);
  queueStore(local, session, () => 1000).save(q.toJSON(), false);
  const loaded = queueStore(local, session, () => 2000).load();
  assert.deepEqual(loaded.map((e) => e.event_id), ids);
  queueStore(local, session, () => 3000).save('[]', true);
  assert.deepEqual(queueStore(local, session, () => 4000).load(), []);
});

test("a closed tab's queue is adopted once; a live tab's is left alone", () => {
  const local = memoryKV();
  const e = makeEvent();
  queueStore(local, memoryKV(), () => 0).save(JSON.stringify([e]), false);
  queueStore(local, memoryKV(), () => 50000).save(JSON.stringify([makeEvent()]), false);
  const adopted = queueStore(local, memoryKV(), () => 70000).load();
  assert.deepEqual(adopted.map((x) => x.event_id), [e.event_id]);
  assert.equal(queueStore(local, memoryKV(), () => 70001).load().length, 0);
});

test('corrupt storage is ignored', () => {
  const local = memoryKV();
  const session = memoryKV();
  session.set('__observer_tab', 't1');
  local.set('__observer_queue:t1', '{not json');
  assert.deepEqual(queueStore(local, session, () => 0).load(), []);
});
