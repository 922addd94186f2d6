import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { isIgnored, labelOf, selectorOf } from '../../src/element.js';
import { installDom } from './dom.js';
import type { Dom } from './dom.js';

let dom: Dom;
afterEach(() => dom.close());
const page = (html: string) => {
  dom = installDom();
  document.body.innerHTML = html;
  return (sel: string) => document.querySelector(sel) as Element;
};

test("click text is the control's own label only: a card's text (names, birth dates, SSNs) never", () => {
  const $ = page(`<div class="card" id="c"><h3>Jane Doe</h3><p>born 1990-04-12, SSN 078-05-1120</p>
    <button id="b"><span>Save</span> <i aria-hidden="true">icon text</i><span hidden>secret</span></button>
    <a id="l" aria-label="Open profile">x</a><input id="i" type="submit" value="Send"><input id="t" type="text" value="typed"></div>`);
  assert.equal(labelOf($('#c h3')), '');
  assert.equal(labelOf($('#c p')), '');
  assert.equal(labelOf($('#b span')), 'Save');
  assert.equal(labelOf($('#b')), 'Save');
  assert.equal(labelOf($('#l')), 'Open profile');
  assert.equal(labelOf($('#i')), 'Send');
  assert.equal(labelOf($('#t')), '', 'a text field: never its value');
});

test('labels are bounded (a link wrapping a whole card has none) and masked; maskAllText sends none', () => {
  const $ = page(`<a id="big" href="/x"><div>${'long text '.repeat(20)}</div></a><button id="p">Call 555-123-4567</button>`);
  assert.equal(labelOf($('#big div')), '');
  assert.equal(labelOf($('#p')), 'Call [phone]');
  assert.equal(labelOf($('#p'), true), '');
});

test('selector: a short CSS path, bounded on huge sibling lists', () => {
  const $ = page(`<ul>${'<li class="row item extra">r</li>'.repeat(1000)}</ul><div id="main"><span class="a b c">x</span></div>`);
  assert.equal(selectorOf($('#main span')), 'div#main > span.a.b');
  const last = document.querySelectorAll('li')[999];
  assert.ok(!selectorOf(last).includes('nth-of-type(1000)'), 'no walk over 1000 siblings');
  assert.match(selectorOf(document.querySelectorAll('li')[2]), /li\.row\.item:nth-of-type\(3\)$/);
});

test('data-observer-ignore covers the element and its subtree', () => {
  const $ = page('<div data-observer-ignore><button id="x">secret</button></div><button id="y">ok</button>');
  assert.equal(isIgnored($('#x')), true);
  assert.equal(isIgnored($('#y')), false);
});
