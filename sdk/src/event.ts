import { MAX_EVENT_BYTES } from './config.js';
import type { Item } from './outbox.js';
import { scrub } from './privacy.js';
import { byteLength } from './size.js';
import type { Metadata, ObserverEvent } from './types.js';

/**
 * Serializes an event within the server's 10 KiB limit: if too big, strings in its metadata
 * are cut harder (and `metadata.truncated` set); null when even that does not fit.
 */
export function fitEvent(ev: ObserverEvent, maxBytes = MAX_EVENT_BYTES): Item | null {
  let j = JSON.stringify(ev);
  let b = byteLength(j);
  for (const cut of [500, 100]) {
    if (b <= maxBytes) break;
    ev.metadata = { ...(scrub(ev.metadata, cut) as Metadata), truncated: true };
    j = JSON.stringify(ev);
    b = byteLength(j);
  }
  return b <= maxBytes ? { e: ev, j, b } : null;
}
