import { CARD_FIRST, CARD_GROUPS, CARD_MAX, CARD_MIN, DIGIT_RUN, MASK_CARD, MASK_PARAM, PARAM, PATTERNS, SENSITIVE } from './rules.js';

const PARAMS = new Set(SENSITIVE.split(','));
/** Longest URL kept on an event: longer ones are cut before any scan (a page may carry 50 KB). */
export const MAX_URL = 2000;
/** Patterns are at most this long, so masking this much past a cut never leaves part of one. */
const SLACK = 48;

/** Luhn checksum over a string of digits. */
export function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = +digits[digits.length - 1 - i];
    if (i % 2) d = d > 4 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

const isCard = (d: string): boolean =>
  d.length >= CARD_MIN && d.length <= CARD_MAX && CARD_FIRST.test(d) && luhn(d);

/** A digit run with single space/dash separators: the card in it masked (as the server does). */
function maskRun(run: string): string {
  if (isCard(run.replace(/[ -]/g, ''))) return MASK_CARD;
  const groups = run.split(/[ -]/);
  const seps = run.match(/[ -]/g) || [];
  if (groups.length < 2 || groups.length > CARD_GROUPS) return run;
  let out = '';
  for (let i = 0; i < groups.length; ) {
    let end = 0;
    for (let j = i, n = 0; j < groups.length && (n += groups[j].length) <= CARD_MAX; j++) {
      if (n >= CARD_MIN && isCard(groups.slice(i, j + 1).join(''))) {
        end = j + 1;
        break;
      }
    }
    out += end ? MASK_CARD : groups[i];
    i = end || i + 1;
    if (i < groups.length) out += seps[i - 1];
  }
  return out;
}

/**
 * Masks what the shared rules call personal: values of sensitive `name=value` parameters,
 * emails, card numbers, national ids and phone numbers. Linear in the input.
 */
export function maskText(s: string): string {
  if (s.indexOf('=') >= 0)
    s = s.replace(PARAM, (m, sep: string, k: string, v: string) => {
      let name = k;
      try { name = decodeURIComponent(k); } catch { /* keep raw */ }
      return v && v !== MASK_PARAM && PARAMS.has(name.toLowerCase()) ? sep + k + '=' + MASK_PARAM : m;
    });
  const digit = /[0-9]/.test(s);
  if (digit && s.length >= CARD_MIN)
    s = s.replace(DIGIT_RUN, (run: string, at: number, all: string) => {
      const end = at + run.length;
      if (run.length < CARD_MIN || (end < all.length && /[\p{L}\p{N}]/u.test(all[end]))) return run;
      return maskRun(run);
    });
  for (const [re, mask, at] of PATTERNS) if (at ? s.indexOf('@') >= 0 : digit) s = s.replace(re, mask);
  return s;
}

/** `s` cut to `max` characters (an ellipsis marks the cut), masked without leaving half a match. */
export function cutMask(s: string, max: number): string {
  const m = maskText(s.length > max + SLACK ? s.slice(0, max + SLACK) : s);
  return m.length > max ? m.slice(0, max) + '…' : m;
}

/**
 * A URL fit to leave the browser: cut to MAX_URL first (the scan is bounded whatever the
 * page's URL), credentials removed, sensitive parameter values `[redacted]`, PII masked.
 */
export function sanitizeUrl(raw: unknown): string {
  if (raw == null || raw === '') return '';
  // URL objects, Location and strings alike: String() is how the browser itself reads a URL value
  // eslint-disable-next-line @typescript-eslint/no-base-to-string
  const s = String(raw);
  return cutMask(s.slice(0, MAX_URL + SLACK).replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#@]*@/i, '$1'), MAX_URL);
}

/**
 * A JSON-safe copy of `v`: strings masked and cut to `maxString`, at most `budget.n` values
 * in all (so a huge object costs little), depth 5; functions and symbols dropped.
 */
export function scrub(v: unknown, maxString = 2000, budget = { n: 300 }, depth = 0): unknown {
  if (budget.n-- <= 0) return undefined;
  if (typeof v === 'string') return cutMask(v, maxString);
  if (typeof v === 'number') return isFinite(v) ? v : null;
  if (typeof v === 'boolean' || v == null) return v ?? null;
  if (typeof v === 'bigint') return String(v);
  if (typeof v !== 'object' || depth > 5) return undefined;
  if (v instanceof Date) return isNaN(+v) ? null : v.toISOString();
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    for (let i = 0; i < v.length && i < 100 && budget.n > 0; i++) out.push(scrub(v[i], maxString, budget, depth + 1) ?? null);
    return out;
  }
  const out: Record<string, unknown> = {};
  for (const k in v as Record<string, unknown>) {
    if (budget.n <= 0) break;
    if (!Object.prototype.hasOwnProperty.call(v, k)) continue;
    const x = scrub((v as Record<string, unknown>)[k], maxString, budget, depth + 1);
    if (x !== undefined) out[cutMask(k, 200)] = x;
  }
  return out;
}
