export { init, Observer } from './api';
export { backoffDelay } from './backoff';
export { CircuitBreaker } from './breaker';
export type { BreakerState } from './breaker';
export { RetryBudget } from './budget';
export { maskText, sanitizeUrl } from './privacy';
export { VERSION } from './version';
export type { CaptureOptions, EventType, Metadata, ObserverEvent, ObserverInstance, ObserverOptions, Stats } from './types';
