import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fitEvent } from '../../src/event';
import { luhn, maskText, sanitizeUrl, scrub } from '../../src/privacy';
import { makeEvent } from './helpers';

test('emails are masked', () => {
  assert.equal(maskText('mail jane.doe+x@mail.example.co.uk now'), 'mail [email] now');
  assert.equal(maskText('a@b'), 'a@b');
});

test('Luhn-valid 13-19 digit card numbers are masked, with spaces or dashes', () => {
  assert.ok(luhn('4111111111111111'));
  assert.ok(!luhn('4111111111111112'));
  for (const card of ['4111111111111111', '4111 1111 1111 1111', '4111-1111-1111-1111', '378282246310005', '6011000990139424', '4222222222222', '6304000000000000000'])
    assert.equal(maskText(`pay ${card}.`), 'pay [card].', card);
  for (const notCard of ['4111111111111112', '411111111111', '12345', '41111111111111111111111', 'order 2024-01-05'])
    assert.equal(maskText(notCard), notCard, notCard);
});

test('sensitive query values are redacted, others kept', () => {
  const u = sanitizeUrl('https://u:p@shop.test/a?q=shoes&password=hunter2&api_key=k1&access_token=t&Session=s&x=1#id_token=abc&tab=2');
  assert.equal(u, 'https://shop.test/a?q=shoes&password=[redacted]&api_key=[redacted]&access_token=[redacted]&Session=[redacted]&x=1#id_token=[redacted]&tab=2');
  assert.equal(sanitizeUrl('/p?auth=1&secret=2&key=3&token=4&page=5', 'https://a.test/'), 'https://a.test/p?auth=[redacted]&secret=[redacted]&key=[redacted]&token=[redacted]&page=5');
  assert.equal(sanitizeUrl('https://a.test/u/jane@x.org?email=jane@x.org'), 'https://a.test/u/[email]?email=[email]');
  assert.equal(sanitizeUrl(''), '');
  assert.equal(sanitizeUrl('not a url ?token=zzz', undefined), 'not a url ?token=[redacted]');
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
  assert.ok(fit && fit.bytes <= 10240);
  assert.equal(JSON.parse(fit.json).metadata.truncated, true);
  const keys: Record<string, string> = {};
  for (let i = 0; i < 100; i++) keys['k' + i] = 'v'.repeat(200);
  assert.equal(fitEvent(makeEvent({ metadata: keys }), 2000), null);
  const small = makeEvent({ metadata: { a: 1 } });
  assert.equal(fitEvent(small)?.json, JSON.stringify(small));
});
