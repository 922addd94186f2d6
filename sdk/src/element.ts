import { cutMask } from './privacy.js';

/** Elements whose text is their label: the only text a click reports. */
const LABELLED = 'a,button,label,summary,[role=button],[role=link],[role=menuitem],[role=tab]';
const NO_TEXT = /^(INPUT|TEXTAREA|SELECT|SCRIPT|STYLE|NOSCRIPT|TEMPLATE|SVG)$/;
/** A label longer than this is not a label (a whole card wrapped in a link, say). */
const MAX_LABEL = 64;

/** True when the element (or an ancestor) carries `data-observer-ignore`. */
export function isIgnored(el: Element | null): boolean {
  try {
    return !!(el && el.closest && el.closest('[data-observer-ignore]'));
  } catch {
    return false;
  }
}

/** Hidden by markup (no layout is forced to find out, so CSS-hidden text is not detected). */
const hidden = (el: Element): boolean => el.matches('[hidden],[aria-hidden=true]');

/** A short CSS path to the element: tag, id or two classes, nth-of-type, at most 5 levels. */
export function selectorOf(el: Element): string {
  const parts: string[] = [];
  const esc = (s: string) => CSS.escape(s);
  let cur: Element | null = el;
  for (let i = 0; cur && cur.nodeType === 1 && i < 5; i++) {
    const upper = cur.tagName;
    const tag = upper.toLowerCase();
    if (cur.id) {
      parts.unshift(tag + '#' + esc(cur.id.slice(0, 64)));
      break;
    }
    let p = tag;
    const cls = typeof cur.className === 'string' ? cur.className.trim().split(/\s+/, 2).filter(Boolean) : [];
    if (cls.length) p += '.' + cls.map((c) => esc(c.slice(0, 40))).join('.');
    const parent: Element | null = cur.parentElement;
    if (parent && tag !== 'body' && tag !== 'html') {
      // nth-of-type from at most 50 siblings each way (each step is a DOM call): on a
      // huge list the position is left out rather than paid for.
      let nth = 1;
      let k = 0;
      let sib = cur.previousElementSibling;
      for (; sib && k < 50; sib = sib.previousElementSibling, k++) if (sib.tagName === upper) nth++;
      let more = nth > 1;
      for (let n = cur.nextElementSibling, j = 0; !more && n && j < 50; n = n.nextElementSibling, j++) more = n.tagName === upper;
      if (more && !sib) p += ':nth-of-type(' + nth + ')';
    }
    parts.unshift(p);
    if (tag === 'body') break;
    cur = parent;
  }
  return cutMask(parts.join(' > '), 300);
}

/**
 * The clicked control's own label, masked and at most MAX_LABEL characters: `aria-label`,
 * a button input's value, or the visible text of the enclosing link/button/label. Anything
 * else (a card, a table cell, a paragraph) reports no text, nor does `maskAllText`.
 */
export function labelOf(el: Element, maskAll = false): string {
  if (maskAll) return '';
  const aria = el.getAttribute('aria-label');
  if (aria) return cutMask(aria.trim(), MAX_LABEL);
  if (el.tagName === 'INPUT') return /^(button|submit|reset)$/.test((el as HTMLInputElement).type) ? cutMask(((el as HTMLInputElement).value || '').trim(), MAX_LABEL) : '';
  const own = el.closest(LABELLED);
  if (!own) return '';
  const ownAria = own.getAttribute('aria-label');
  if (ownAria) return cutMask(ownAria.trim(), MAX_LABEL);
  let out = '';
  let nodes = 0;
  let tooLong = false;
  const walk = (n: Node): void => {
    for (let c = n.firstChild; c && !tooLong; c = c.nextSibling) {
      if (++nodes > 50) return void (tooLong = true);
      if (c.nodeType === 3) out += c.nodeValue;
      else if (c.nodeType === 1 && !NO_TEXT.test((c as Element).tagName.toUpperCase()) && !hidden(c as Element) && !(c as Element).hasAttribute('data-observer-ignore')) walk(c);
      if (out.length > MAX_LABEL * 3) tooLong = true;
    }
  };
  walk(own);
  out = out.replace(/\s+/g, ' ').trim();
  return tooLong || out.length > MAX_LABEL ? '' : cutMask(out, MAX_LABEL);
}
