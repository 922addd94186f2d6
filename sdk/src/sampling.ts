/**
 * Whether a session is in the sample. Decided by a hash of its id, so every tab and every
 * page load of a session agree and sessions are kept or dropped whole.
 */
export function inSample(sessionId: string, rate: number): boolean {
  if (rate >= 1) return true;
  if (rate <= 0) return false;
  let h = 0x811c9dc5;
  for (let i = 0; i < sessionId.length; i++) h = Math.imul(h ^ sessionId.charCodeAt(i), 0x01000193);
  return (h >>> 0) / 4294967296 < rate;
}
