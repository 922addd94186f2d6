import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';

test('defaults: everything on, 50 events a batch, 30 KB a request, one-day dedup window', () => {
  const c = resolveConfig({ apiKey: 'k', endpoint: 'https://api.test///' });
  assert.equal(c.ingestUrl, 'https://api.test/v1/events');
  assert.deepEqual(c.capture, { clicks: true, errors: true, network: true, navigation: true, pageViews: true, webVitals: true });
  assert.equal(c.vitalsAsked, false);
  assert.equal(c.maxBatchSize, 50);
  assert.equal(c.maxBatchBytes, 30000);
  assert.equal(c.dedupWindow, 86400000);
  assert.equal(c.respectDoNotTrack, true);
  assert.equal(c.defaultOptOut, false);
  assert.equal(c.maskAllText, false);
  assert.equal(c.pageViewTrigger, 'path');
  assert.equal(c.sampleRate, 1);
});

test('numbers are clamped to what the server and the browser allow; junk falls back to defaults', () => {
  const c = resolveConfig({ apiKey: 'k', endpoint: 'e', maxBatchSize: 500, maxBatchBytes: 1e9, sampleRate: 7, flushInterval: NaN, maxQueueBytes: 1e9 });
  assert.equal(c.maxBatchSize, 50);
  assert.equal(c.maxBatchBytes, 60000, 'the keepalive budget');
  assert.equal(c.sampleRate, 1);
  assert.equal(c.flushInterval, 5000);
  assert.ok(c.maxQueueBytes <= 240000, 'under the 256 KB store cap');
});

test('options: consent, privacy, release, properties, explicit webVitals', () => {
  const c = resolveConfig({ apiKey: 'k', endpoint: 'e', defaultOptOut: true, maskAllText: true, pageViewTrigger: 'url', release: 'r'.repeat(300), properties: { a: 1 }, capture: { webVitals: true, network: false } });
  assert.equal(c.defaultOptOut, true);
  assert.equal(c.maskAllText, true);
  assert.equal(c.pageViewTrigger, 'url');
  assert.equal(c.release?.length, 200);
  assert.deepEqual(c.properties, { a: 1 });
  assert.equal(c.vitalsAsked, true);
  assert.equal(c.capture.network, false);
});

test('apiKey and endpoint are required', () => {
  assert.throws(() => resolveConfig({} as never));
  assert.throws(() => resolveConfig({ apiKey: 'k' } as never));
});

test("dedupWindow is capped at the server's default DEDUP_WINDOW (app/settings.py): a longer one would resend what the server forgot", () => {
  const settings = readFileSync(new URL('../app/settings.py', `file://${process.cwd()}/`), 'utf8'); // npm test runs in sdk/
  const m = /dedup_window: int = _setting\("(\d+)"/.exec(settings);
  assert.ok(m, 'dedup_window default not found in app/settings.py');
  const serverMs = Number(m[1]) * 1000;
  assert.equal(resolveConfig({ apiKey: 'k', endpoint: 'e' }).dedupWindow, serverMs, 'the default is the server default');
  assert.equal(resolveConfig({ apiKey: 'k', endpoint: 'e', dedupWindow: 30 * 86400000 }).dedupWindow, serverMs, '30 days clamped');
  assert.equal(resolveConfig({ apiKey: 'k', endpoint: 'e', dedupWindow: serverMs + 1 }).dedupWindow, serverMs);
  assert.equal(resolveConfig({ apiKey: 'k', endpoint: 'e', dedupWindow: 3600000 }).dedupWindow, 3600000, 'a shorter server window can be matched');
  assert.equal(resolveConfig({ apiKey: 'k', endpoint: 'e', dedupWindow: 1 }).dedupWindow, 60000, 'at least a minute');
});
