import type { KV } from './storage';

export const CONSENT_KEY = '__observer_consent';

/** True when the browser sends Do Not Track or Global Privacy Control. */
export function browserSaysNo(): boolean {
  try {
    const n = navigator as Navigator & { globalPrivacyControl?: boolean; msDoNotTrack?: string };
    const w = window as Window & { doNotTrack?: string };
    return n.globalPrivacyControl === true || [n.doNotTrack, w.doNotTrack, n.msDoNotTrack].some((v) => v === '1' || v === 'yes');
  } catch {
    return false;
  }
}

/** Whether capture may run: an explicit opt-out wins, an explicit opt-in overrides DNT/GPC. */
export function mayCapture(kv: KV, respectDoNotTrack: boolean, saysNo: () => boolean = browserSaysNo): boolean {
  const c = kv.get(CONSENT_KEY);
  if (c === 'out') return false;
  return c === 'in' || !respectDoNotTrack || !saysNo();
}
