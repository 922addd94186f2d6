import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classify, createTransport, encodeBody } from '../../src/transport.js';
import { makeEvent } from './helpers.js';

test('classify: retry only network errors, 408, 429, 5xx; 413 splits; other 4xx drop', () => {
  assert.equal(classify(202), 'ok');
  for (const s of [0, 408, 429, 500, 502, 503, 504]) assert.equal(classify(s), 'retry', String(s));
  assert.equal(classify(413), 'split');
  for (const s of [400, 401, 403, 404, 415, 422]) assert.equal(classify(s), 'drop', String(s));
});

test('send: POST JSON with bearer key, request id and keepalive; reads the answer headers', async () => {
  let seen: { url: string; init: RequestInit } | null = null;
  const fetchFn = async (url: string, init: RequestInit) => {
    seen = { url, init };
    return new Response(JSON.stringify({ accepted: 1, rejected: [{ index: 1 }] }), {
      status: 202,
      headers: { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '1700000010', 'Retry-After': '3' },
    });
  };
  const tr = createTransport(fetchFn, 'https://api.test/v1/events', 'k1', () => 1700000000000);
  const res = await tr([makeEvent(), makeEvent()], true, false);
  assert.deepEqual(res, { status: 202, retryAfter: 3000, rateWait: 10000, j: { accepted: 1, rejected: [{ index: 1 }] } });
  const s = seen as unknown as { url: string; init: RequestInit };
  const h = s.init.headers as Record<string, string>;
  assert.equal(s.url, 'https://api.test/v1/events');
  assert.equal(h['Content-Type'], 'application/json');
  assert.equal(h.Authorization, 'Bearer k1');
  assert.match(h['X-Request-ID'], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(s.init.keepalive, true);
  const body = JSON.parse(String(s.init.body));
  assert.equal(body.events.length, 2);
  assert.ok(!('api_key' in body), 'no key in a JSON body');
  assert.ok(!Number.isNaN(Date.parse(body.sent_at)));
});

test('send: a network failure is status 0, never a throw', async () => {
  const tr = createTransport(() => Promise.reject(new TypeError('Failed to fetch')), 'u', 'k', Date.now);
  assert.equal((await tr([makeEvent()], false, false)).status, 0);
});

test('page-hide requests: text/plain (no preflight) carrying api_key, keepalive', async () => {
  const body = JSON.parse(encodeBody([makeEvent()], 'k9'));
  assert.equal(body.api_key, 'k9');
  const calls: RequestInit[] = [];
  const tr = createTransport(async (_u, init) => (calls.push(init), new Response(null, { status: 503 })), 'u', 'k9', Date.now);
  assert.equal((await tr([makeEvent()], true, true)).status, 503, 'the status is read: a 5xx is no delivery');
  assert.equal(calls[0].keepalive, true);
  const h = calls[0].headers as Record<string, string>;
  assert.equal(h['Content-Type'], 'text/plain');
  assert.ok(!('Authorization' in h));
  assert.equal(JSON.parse(String(calls[0].body)).api_key, 'k9');
});

test('a keepalive request over the browser budget fails as a network error (status 0): events stay', async () => {
  const tr = createTransport(() => Promise.reject(new TypeError('keepalive quota')), 'u', 'k', Date.now);
  assert.equal((await tr([makeEvent()], true, true)).status, 0);
});
