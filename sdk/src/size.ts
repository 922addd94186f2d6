const enc = typeof TextEncoder !== 'undefined' ? new TextEncoder() : null;

/** UTF-8 length of a string: what the server counts against its limits. */
export function byteLength(s: string): number {
  // ASCII (nearly every event) is one byte a character: no encoding needed.
  return !/[\x80-\uffff]/.test(s) || !enc ? s.length : enc.encode(s).length;
}
