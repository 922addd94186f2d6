import type { KV } from './storage.js';

export const CONSENT_KEY = '__observer_consent';

/** True when the browser sends Do Not Track or Global Privacy Control. */
export function browserSaysNo(): boolean {
  try {
    const n = navigator as Navigator & { globalPrivacyControl?: boolean };
    return n.globalPrivacyControl === true || n.doNotTrack === '1';
  } catch {
    return false;
  }
}

/**
 * Whether capture may run: an explicit opt-out wins; an explicit opt-in overrides DNT/GPC and
 * `defaultOptOut`; otherwise DNT/GPC (when respected) and `defaultOptOut` mean wait for consent.
 */
export function mayCapture(kv: KV, respectDoNotTrack: boolean, defaultOptOut: boolean, saysNo: () => boolean = browserSaysNo): boolean {
  const c = kv.get(CONSENT_KEY);
  if (c === 'out') return false;
  return c === 'in' || (!defaultOptOut && !(respectDoNotTrack && saysNo()));
}
