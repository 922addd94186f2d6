/* Entry of the <script> build: defines window.Observer once, whatever the number of loads. */
import { Observer, replay } from './api.js';

export type { ObserverGlobal, ObserverInstance, ObserverOptions } from './types.js';

try {
  const w = window as unknown as { Observer?: { q?: unknown } };
  const stub = w.Observer;
  // The loader snippet leaves a stub with a queue `q`: replace it and replay its calls.
  if (!stub || Array.isArray(stub.q)) {
    w.Observer = Observer as unknown as { q?: unknown };
    if (stub) replay(stub.q);
  }
} catch {
  /* not a browser */
}
