/* Entry of the ESM module and of observer.full.min.js: the core plus web vitals and the debug verdicts. */
import { extensions } from './extensions.js';
import { observeVitals } from './observers/vitals.js';
import { verdicts } from './verdicts.js';

extensions.vitals = observeVitals;
extensions.verdicts = verdicts;

export * from './index.js';
