import type { Ctx } from './context.js';

/**
 * Observers kept out of the core <script> build to hold it under 10 KiB gzipped; the full
 * builds (observer.full.min.js, the npm module) register them here before `init` runs.
 */
export const extensions: { vitals?: (ctx: Ctx) => void } = {};
