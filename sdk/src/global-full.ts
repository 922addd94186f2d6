/* Entry of observer.full.min.js: the <script> build with web vitals. */
import './full.js';
import './global.js';

export type { ObserverGlobal, ObserverInstance, ObserverOptions } from './types.js';
