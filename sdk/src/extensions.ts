import type { Ctx } from './context.js';
import type { Batch } from './outbox.js';
import type { Answer } from './transport.js';

/**
 * Parts kept out of the core <script> build to hold it under 10 KiB gzipped; the full
 * builds (observer.full.min.js, the npm module) register them here before `init` runs:
 * web vitals, and the debug mode's per-event verdicts (the core prints the answer as is).
 */
export const extensions: { vitals?: (ctx: Ctx) => void; verdicts?: (batch: Batch, j: Answer | undefined) => string } = {};
