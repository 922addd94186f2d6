import type { Ctx } from './context';

/**
 * Observers kept out of the core <script> build to hold it under 8 KiB gzipped; the full
 * builds (observer.full.min.js, the ESM module) register them here before `init` runs.
 */
export const extensions: { vitals?: (ctx: Ctx) => void } = {};
