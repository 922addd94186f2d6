import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mayCapture } from '../../src/consent.js';
import { inSample } from '../../src/sampling.js';
import { SessionStore } from '../../src/session.js';
import { memoryKV } from '../../src/storage.js';

const MIN = 60000;
const rules = { idleTimeout: 30 * MIN, maxDuration: 24 * 60 * MIN };
const ids = () => {
  let n = 0;
  return () => 'sess-' + ++n;
};

test('the id stays while there is activity within the idle timeout', () => {
  const s = new SessionStore(memoryKV(), rules, ids());
  let t = 0;
  const first = s.touch(t);
  for (let i = 0; i < 10; i++) assert.equal(s.touch((t += 29 * MIN)), first);
});

test('rotated after 30 minutes idle', () => {
  const s = new SessionStore(memoryKV(), rules, ids());
  assert.equal(s.touch(0), 'sess-1');
  assert.equal(s.touch(30 * MIN), 'sess-1');
  assert.equal(s.touch(60 * MIN + 1), 'sess-2');
});

test('rotated after 24 hours in total even when always active', () => {
  const s = new SessionStore(memoryKV(), rules, ids());
  let t = 0;
  s.touch(t);
  while (t < 24 * 60 * MIN) assert.equal(s.touch((t += 20 * MIN)), t > 24 * 60 * MIN ? 'sess-2' : 'sess-1');
});

test('timeouts are settable', () => {
  const s = new SessionStore(memoryKV(), { idleTimeout: 1000, maxDuration: 5000 }, ids());
  s.touch(0);
  assert.equal(s.touch(1001), 'sess-2');
  for (let t = 1500; t <= 6001; t += 500) s.touch(t);
  assert.equal(s.touch(6500), 'sess-3');
});

test('shared by the tabs of one origin (same storage)', () => {
  const kv = memoryKV();
  const tabA = new SessionStore(kv, rules, ids());
  const tabB = new SessionStore(kv, rules, () => 'other');
  const id = tabA.touch(0);
  assert.equal(tabB.touch(20 * MIN), id);
  assert.equal(tabA.touch(45 * MIN), id, 'activity in tab B kept the session alive for tab A');
});

test('activity is written at most every 5 s (each write is a storage event in every other tab); bad storage starts afresh', () => {
  const kv = memoryKV();
  let writes = 0;
  const counting = { ...kv, set: (k: string, v: string) => (writes++, kv.set(k, v)) };
  const s = new SessionStore(counting, rules, ids());
  for (let t = 0; t < 60000; t += 100) s.touch(t);
  assert.equal(writes, 12, '1 start + one per 5 s of activity over a minute');
  kv.set('__observer_session', '{broken');
  assert.equal(s.touch(61000), 'sess-2');
});

test('consent: opt-out wins, opt-in overrides DNT/GPC and defaultOptOut; both mean wait by default', () => {
  const kv = memoryKV();
  assert.equal(mayCapture(kv, true, false, () => true), false, 'DNT/GPC respected by default');
  assert.equal(mayCapture(kv, false, false, () => true), true);
  assert.equal(mayCapture(kv, true, false, () => false), true);
  assert.equal(mayCapture(kv, true, true, () => false), false, 'defaultOptOut waits for consent');
  kv.set('__observer_consent', 'in');
  assert.equal(mayCapture(kv, true, true, () => true), true);
  kv.set('__observer_consent', 'out');
  assert.equal(mayCapture(kv, false, false, () => false), false);
});

test('sampling keeps or drops whole sessions, close to the rate', () => {
  assert.equal(inSample('a', 1), true);
  assert.equal(inSample('a', 0), false);
  assert.equal(inSample('abc', 0.5), inSample('abc', 0.5));
  let kept = 0;
  for (let i = 0; i < 4000; i++) if (inSample('session-' + i, 0.25)) kept++;
  assert.ok(kept > 800 && kept < 1200, String(kept));
});
