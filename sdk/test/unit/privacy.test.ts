import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fitEvent } from '../../src/event.js';
import { cutMask, luhn, maskText, sanitizeUrl, scrub } from '../../src/privacy.js';
import rules from '../../../app/ingest/privacy_rules.json' with { type: 'json' };
import { makeEvent } from './helpers.js';

test('emails are masked', () => {
  assert.equal(maskText('mail jane.doe+x@mail.example.co.uk now'), 'mail [email] now');
  assert.equal(maskText('a@b'), 'a@b');
});

test('Luhn-valid 13-19 digit card numbers are masked, with spaces or dashes', () => {
  assert.ok(luhn('4111111111111111'));
  assert.ok(!luhn('4111111111111112'));
  for (const card of ['4111111111111111', '4111 1111 1111 1111', '4111-1111-1111-1111', '378282246310005', '6011000990139424', '4222222222222', '6304000000000000000'])
    assert.equal(maskText(`pay ${card}.`), 'pay [card].', card);
  for (const notCard of ['4111111111111112', '411111111111', '12345', '41111111111111111111111', 'order 2024-01-05', '1700000000004'])
    assert.equal(maskText(notCard), notCard, notCard);
});

test('sensitive query values are redacted (search and one-time parameters too), others kept; credentials go', () => {
  const u = sanitizeUrl('https://u:p@shop.test/a?q=shoes&password=hunter2&api_key=k1&access_token=t&Session=s&x=1#id_token=abc&tab=2');
  assert.equal(u, 'https://shop.test/a?q=[redacted]&password=[redacted]&api_key=[redacted]&access_token=[redacted]&Session=[redacted]&x=1#id_token=[redacted]&tab=2');
  assert.equal(sanitizeUrl('/p?otp=1&search=2&keyword=3&token=4&page=5'), '/p?otp=[redacted]&search=[redacted]&keyword=[redacted]&token=[redacted]&page=5');
  assert.equal(sanitizeUrl('https://a.test/u/jane@x.org?to=jane@x.org'), 'https://a.test/u/[email]?to=[email]');
  assert.equal(sanitizeUrl(''), '');
  assert.equal(sanitizeUrl('not a url ?token=zzz'), 'not a url ?token=[redacted]');
});

test('a 50 KB URL is cut to 2,000 characters before any scan, and nothing sensitive survives the cut', () => {
  const url = 'https://shop.test/p?token=' + 'a'.repeat(50000) + '&x=1';
  const out = sanitizeUrl(url);
  assert.ok(out.length <= 2001, String(out.length));
  assert.equal(out, 'https://shop.test/p?token=[redacted]');
  const card = 'https://shop.test/' + 'x'.repeat(1990) + '/4111111111111111';
  assert.ok(!/4111/.test(sanitizeUrl(card)), 'a card across the cut is masked, not half-kept');
});

test('masking is linear: 80 KB hostile strings are bounded by cutting first, and cheap even uncut', () => {
  for (const hostile of ['a'.repeat(80000) + '@', 'a.'.repeat(40000) + '@x', '1 '.repeat(40000), '1-'.repeat(40000) + 'x', '?a=b&'.repeat(16000), '+1 '.repeat(26000)]) {
    assert.ok(cutMask(hostile, 2000).length <= 2001);
    assert.equal(typeof maskText(hostile), 'string');
  }
});

test('scrub masks every string deep inside, caps sizes and survives cycles', () => {
  const cyc: Record<string, unknown> = { name: 'x' };
  cyc.self = cyc;
  const out = scrub({ a: ['me@x.org', { b: '4111 1111 1111 1111' }], long: 'y'.repeat(50), n: NaN, f: () => 1, big: BigInt(5), cyc }, 10) as Record<string, unknown>;
  assert.deepEqual(out.a, ['[email]', { b: '[card]' }]);
  assert.equal(out.long, 'yyyyyyyyyy…');
  assert.equal(out.n, null);
  assert.ok(!('f' in out));
  assert.equal(out.big, '5');
  assert.doesNotThrow(() => JSON.stringify(out));
});

test('events over 10 KiB are trimmed, or dropped when trimming is not enough', () => {
  const big = makeEvent({ metadata: { stack: 'x'.repeat(20000) } });
  const fit = fitEvent(big);
  assert.ok(fit && fit.b <= 10240);
  assert.equal(JSON.parse(fit.j).metadata.truncated, true);
  const keys: Record<string, string> = {};
  for (let i = 0; i < 100; i++) keys['k' + i] = 'v'.repeat(200);
  assert.equal(fitEvent(makeEvent({ metadata: keys }), 2000), null);
  const small = makeEvent({ metadata: { a: 1 } });
  assert.equal(fitEvent(small)?.j, JSON.stringify(small));
});

test('the shared rule vectors (app/ingest/privacy_rules.json): the server scrubber passes the same list', () => {
  for (const [input, expected] of rules.vectors as Array<[string, string]>) assert.equal(maskText(input), expected, input);
});

test('the shared false-positive corpus stays unmasked: timestamps, UUIDs, prices, order ids', () => {
  for (const keep of rules.keep as string[]) assert.equal(maskText(keep), keep, keep);
});

test('scrub is bounded in values visited, whatever the size of the object', () => {
  const huge: Record<string, unknown> = {};
  for (let i = 0; i < 100000; i++) huge['k' + i] = { v: i };
  const out = JSON.stringify(scrub(huge, 100, { n: 50 }));
  assert.ok(out.length < 2000, String(out.length));
});
