export { init, Observer } from './api.js';
export { backoffDelay } from './backoff.js';
export { CircuitBreaker } from './breaker.js';
export type { BreakerState } from './breaker.js';
export { RetryBudget } from './budget.js';
export { maskText, sanitizeUrl } from './privacy.js';
export { VERSION } from './version.js';
export type { CaptureOptions, EventType, Metadata, ObserverEvent, ObserverGlobal, ObserverInstance, ObserverOptions, Stats } from './types.js';
