import { MAX_EVENT_BYTES } from './config';
import { scrub } from './privacy';
import { byteLength } from './size';
import type { Metadata, ObserverEvent } from './types';

/**
 * Serializes an event within the server's 10 KiB limit: if too big, strings in its metadata
 * are cut harder (and `metadata.truncated` set); null when even that does not fit.
 */
export function fitEvent(ev: ObserverEvent, maxBytes = MAX_EVENT_BYTES): { json: string; bytes: number } | null {
  let json = JSON.stringify(ev);
  let bytes = byteLength(json);
  for (const cut of [500, 100]) {
    if (bytes <= maxBytes) break;
    ev.metadata = { ...(scrub(ev.metadata, cut) as Metadata), truncated: true };
    json = JSON.stringify(ev);
    bytes = byteLength(json);
  }
  return bytes <= maxBytes ? { json, bytes } : null;
}
