import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mayCapture } from '../../src/consent';
import { inSample } from '../../src/sampling';
import { SessionStore } from '../../src/session';
import { memoryKV } from '../../src/storage';

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

test('peek does not extend the session; set() replaces the id; bad storage starts afresh', () => {
  const kv = memoryKV();
  const s = new SessionStore(kv, rules, ids());
  s.touch(0);
  s.peek(29 * MIN);
  assert.equal(s.touch(31 * MIN), 'sess-2');
  s.set('mine', 40 * MIN);
  assert.equal(s.touch(41 * MIN), 'mine');
  kv.set('__observer_session', '{broken');
  assert.equal(s.touch(42 * MIN), 'sess-3');
});

test('consent: opt-out wins, opt-in overrides DNT/GPC, DNT respected by default', () => {
  const kv = memoryKV();
  assert.equal(mayCapture(kv, true, () => true), false);
  assert.equal(mayCapture(kv, false, () => true), true);
  assert.equal(mayCapture(kv, true, () => false), true);
  kv.set('__observer_consent', 'in');
  assert.equal(mayCapture(kv, true, () => true), true);
  kv.set('__observer_consent', 'out');
  assert.equal(mayCapture(kv, false, () => false), false);
});

test('sampling keeps or drops whole sessions, close to the rate', () => {
  assert.equal(inSample('a', 1), true);
  assert.equal(inSample('a', 0), false);
  assert.equal(inSample('abc', 0.5), inSample('abc', 0.5));
  let kept = 0;
  for (let i = 0; i < 4000; i++) if (inSample('session-' + i, 0.25)) kept++;
  assert.ok(kept > 800 && kept < 1200, String(kept));
});
