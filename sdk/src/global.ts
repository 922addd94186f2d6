/* Entry of the <script> build: defines window.Observer once, whatever the number of loads. */
import { Observer, replay } from './api.js';

export type { ObserverGlobal, ObserverInstance, ObserverOptions } from './types.js';

try {
  const w = window as unknown as { Observer?: { q?: unknown } };
  const stub = w.Observer;
  if (!stub) w.Observer = Observer as unknown as { q?: unknown };
  else if (Array.isArray(stub.q)) {
    // The loader snippet's stub (a queue `q`): it becomes the real object in place, so a reference
    // the page kept to it forwards to the running instance too; then its calls are replayed.
    const q = stub.q;
    delete stub.q;
    Object.assign(stub, Observer);
    replay(q);
  }
} catch {
  /* not a browser */
}
