/* Entry of the ESM module and of observer.full.min.js: the core plus web vitals. */
import { extensions } from './extensions.js';
import { observeVitals } from './observers/vitals.js';

extensions.vitals = observeVitals;

export * from './index.js';
