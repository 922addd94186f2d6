import type { Batch } from './outbox.js';
import type { Answer, Rejection } from './transport.js';

/**
 * Debug mode, full builds: the server's verdict on a request in one line: the events accepted
 * (or the error code), the request id, each refused event (type, event_id) with its code, and
 * what became of the client report. The core build prints the answer object as it came.
 */
export function verdicts(batch: Batch, j: Answer | undefined): string {
  try {
    if (!j) return '';
    const e = j.error || {};
    const rej = e.details || j.rejected;
    return (e.code || 'accepted ' + j.accepted) + ', request ' + (e.request_id || j.request_id) + (Array.isArray(rej) ? (rej as Rejection[]).map((r) => {
      const it = batch.items[r.index];
      return ', rejected ' + (it ? it.e.type + ' ' + it.e.event_id : '#' + r.index) + ': ' + r.code;
    }).join('') : '') + (j.client_report ? ', client report ' + j.client_report : '');
  } catch {
    return '?';
  }
}
