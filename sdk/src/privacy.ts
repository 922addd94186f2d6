const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;
const CARD = /\b\d(?:[ -]?\d){12,18}\b/g;
/** Query parameters whose values never leave the browser. */
export const SENSITIVE_PARAM = /pass|pwd|token|secret|auth|key|session|^sid$|signature|credential|jwt|^code$/i;

/** Luhn checksum over a string of digits. */
export function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = +digits[digits.length - 1 - i];
    if (i % 2) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** Masks emails and Luhn-valid 13-19 digit card numbers (spaces/dashes allowed) in a string. */
export function maskText(s: string): string {
  return s
    .replace(EMAIL, '[email]')
    .replace(CARD, (m) => {
      const d = m.replace(/\D/g, '');
      return d.length >= 13 && d.length <= 19 && luhn(d) ? '[card]' : m;
    });
}

const redactParams = (part: string): string =>
  part.replace(/([?&#;]|^)([^=&#;]+)=([^&#;]*)/g, (m, sep: string, k: string, v: string) => {
    let name = k;
    try { name = decodeURIComponent(k.replace(/\+/g, ' ')); } catch { /* keep raw */ }
    return SENSITIVE_PARAM.test(name) && v ? sep + k + '=[redacted]' : m;
  });

/**
 * A URL fit to leave the browser: credentials removed, values of sensitive query (and
 * fragment) parameters replaced by `[redacted]`, emails and card numbers masked.
 */
export function sanitizeUrl(raw: unknown, base?: string): string {
  if (raw == null || raw === '') return '';
  let s = String(raw);
  try {
    const u = new URL(s, base || (typeof location !== 'undefined' ? location.href : undefined));
    u.username = '';
    u.password = '';
    s = u.origin + u.pathname + redactParams(u.search) + redactParams(u.hash);
    if (u.origin === 'null') s = u.protocol + u.pathname + redactParams(u.search);
  } catch {
    s = redactParams(s);
  }
  return maskText(s);
}

/**
 * A JSON-safe deep copy of `v` with every string masked and cut to `maxString`, depth,
 * keys and array lengths capped; functions and symbols dropped, cycles cut by the depth cap.
 */
export function scrub(v: unknown, maxString = 2000, depth = 0): unknown {
  if (typeof v === 'string') {
    // Mask before cutting, so a cut never leaves part of a card number or email behind.
    const m = maskText(v.length > maxString + 100 ? v.slice(0, maxString + 100) : v);
    return m.length > maxString ? m.slice(0, maxString) + '…' : m;
  }
  if (typeof v === 'number') return isFinite(v) ? v : null;
  if (typeof v === 'boolean' || v == null) return v ?? null;
  if (typeof v === 'bigint') return String(v);
  if (typeof v !== 'object' || depth > 5) return undefined;
  if (v instanceof Date) return isNaN(+v) ? null : v.toISOString();
  if (Array.isArray(v)) return v.slice(0, 100).map((x) => scrub(x, maxString, depth + 1) ?? null);
  const out: Record<string, unknown> = {};
  let n = 0;
  for (const k in v as Record<string, unknown>) {
    if (!Object.prototype.hasOwnProperty.call(v, k) || n++ >= 100) continue;
    const x = scrub((v as Record<string, unknown>)[k], maxString, depth + 1);
    if (x !== undefined) out[maskText(k).slice(0, 200)] = x;
  }
  return out;
}
