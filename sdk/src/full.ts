/* Entry of the ESM module and of observer.full.min.js: the core plus web vitals. */
import { extensions } from './extensions';
import { observeVitals } from './observers/vitals';

extensions.vitals = observeVitals;

export * from './index';
