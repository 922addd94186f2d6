import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Teardown } from '../../src/teardown.js';

type Api = { call: (x: number) => number };
const original = function (this: unknown, x: number) {
  if (x < 0) throw new RangeError('negative');
  return x * 2;
};

test('the wrapper calls the original, returns its value and rethrows its exact error', () => {
  const obj: Api = { call: original };
  const t = new Teardown();
  const seen: number[] = [];
  t.patch(obj, 'call', (orig) => function (this: unknown, ...a: unknown[]) {
    seen.push(a[0] as number);
    return orig.apply(this, a);
  });
  assert.notEqual(obj.call, original);
  assert.equal(obj.call(21), 42);
  assert.throws(() => obj.call(-1), RangeError);
  assert.deepEqual(seen, [21, -1]);
  t.run();
  assert.equal(obj.call, original, 'restored when still ours');
});

test('wrapped again by another library: ours stays in its chain as a pass-through', () => {
  const obj: Api = { call: original };
  const t = new Teardown();
  let ours = 0;
  t.patch(obj, 'call', (orig) => function (this: unknown, ...a: unknown[]) {
    ours++;
    return orig.apply(this, a);
  });
  const below = obj.call;
  let theirs = 0;
  const other = function (this: unknown, x: number) {
    theirs++;
    return below.call(this, x);
  };
  obj.call = other;
  t.run();
  assert.equal(obj.call, other, 'the later wrapper is left in place');
  assert.equal(obj.call(2), 4);
  assert.equal(theirs, 1);
  assert.equal(ours, 0, 'our wrapper no longer records anything');
});

test('listeners: handlers never throw into the page, and all are removed', () => {
  const target = new EventTarget();
  const errors: unknown[] = [];
  const t = new Teardown((e) => errors.push(e));
  let calls = 0;
  t.listen(target, 'ping', () => {
    calls++;
    throw new Error('observer bug');
  });
  assert.doesNotThrow(() => target.dispatchEvent(new Event('ping')));
  assert.equal(errors.length, 1);
  t.run();
  target.dispatchEvent(new Event('ping'));
  assert.equal(calls, 1);
});
