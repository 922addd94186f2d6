import { maskText } from './privacy';

const FORM_FIELD = /^(INPUT|TEXTAREA|SELECT|OPTION|SCRIPT|STYLE|NOSCRIPT)$/;

/** True when the element (or an ancestor) carries `data-observer-ignore`. */
export function isIgnored(el: Element | null): boolean {
  try {
    return !!(el && el.closest && el.closest('[data-observer-ignore]'));
  } catch {
    return false;
  }
}

const skipText = (el: Element): boolean =>
  FORM_FIELD.test(el.tagName) || el.hasAttribute('data-observer-ignore') || (el as HTMLElement).isContentEditable === true;

/** A short CSS path to the element: tag, id or two classes, nth-of-type, at most 5 levels. */
export function selectorOf(el: Element): string {
  const parts: string[] = [];
  const esc = (s: string) => (typeof CSS !== 'undefined' && CSS.escape ? CSS.escape(s) : s);
  let cur: Element | null = el;
  for (let i = 0; cur && cur.nodeType === 1 && i < 5; i++) {
    const tag = cur.tagName.toLowerCase();
    if (cur.id) {
      parts.unshift(tag + '#' + esc(cur.id));
      break;
    }
    let p = tag;
    const cls = typeof cur.className === 'string' ? cur.className.trim().split(/\s+/).filter(Boolean).slice(0, 2) : [];
    if (cls.length) p += '.' + cls.map(esc).join('.');
    const parent: Element | null = cur.parentElement;
    if (parent && tag !== 'body' && tag !== 'html') {
      const same = Array.prototype.filter.call(parent.children, (c: Element) => c.tagName === (cur as Element).tagName);
      if (same.length > 1) p += ':nth-of-type(' + (same.indexOf(cur) + 1) + ')';
    }
    parts.unshift(p);
    if (tag === 'body') break;
    cur = parent;
  }
  return maskText(parts.join(' > ')).slice(0, 300);
}

/** Visible text of an element, trimmed and masked; never the value or text of a form field. */
export function textOf(el: Element, max = 100): string {
  if (skipText(el)) return '';
  let out = '';
  const walk = (n: Node): void => {
    for (let c = n.firstChild; c && out.length < max * 2; c = c.nextSibling) {
      if (c.nodeType === 3) out += c.nodeValue;
      else if (c.nodeType === 1 && !skipText(c as Element)) walk(c);
    }
  };
  walk(el);
  return maskText(out.replace(/\s+/g, ' ').trim().slice(0, max));
}
