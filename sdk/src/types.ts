/** The closed list of event types the ingest API accepts. */
export type EventType =
  | 'page_view'
  | 'click'
  | 'rage_click'
  | 'error'
  | 'network'
  | 'navigation'
  | 'web_vital'
  | 'custom';

export type Metadata = Record<string, unknown>;

/** One event as it travels on the wire (`POST /v1/events`). */
export interface ObserverEvent {
  event_id: string;
  type: EventType;
  timestamp: number;
  session_id: string;
  url: string;
  metadata: Metadata;
  name?: string;
  anonymous_id?: string;
}

/** Which observers run; every one defaults to on. */
export interface CaptureOptions {
  clicks: boolean;
  errors: boolean;
  network: boolean;
  navigation: boolean;
  pageViews: boolean;
  /** Full builds only (observer.full.min.js, the npm module); the core build ignores it (and says so in debug mode). */
  webVitals: boolean;
}

export interface ObserverOptions {
  apiKey: string;
  /** Base URL of the ingest API; events go to `${endpoint}/v1/events`. */
  endpoint: string;
  debug?: boolean;
  sampleRate?: number;
  /** Honour Do Not Track / Global Privacy Control: capture and store nothing until `optIn()` (default true). */
  respectDoNotTrack?: boolean;
  /** Start opted out: nothing captured or stored (but the consent flag) until `optIn()`. */
  defaultOptOut?: boolean;
  /** Never send page text: no click text, no page titles. */
  maskAllText?: boolean;
  /** `path` (default): a page view when the path changes; `url`: also on query/hash changes. */
  pageViewTrigger?: 'path' | 'url';
  /** Your app's release, put on every event as `metadata.release`. */
  release?: string;
  /** Properties merged into every event's metadata (the event's own keys win). */
  properties?: Metadata;
  capture?: Partial<CaptureOptions>;
  flushInterval?: number;
  maxBatchSize?: number;
  maxBatchBytes?: number;
  maxQueueSize?: number;
  maxQueueBytes?: number;
  /**
   * The server's dedup window (ms): persisted events older than this are dropped, not resent.
   * At most the server's default `DEDUP_WINDOW` (one day; longer values are clamped to it); set it
   * lower when the server's is lower.
   */
  dedupWindow?: number;
  sessionIdleTimeout?: number;
  sessionMaxDuration?: number;
  /** Last look at each event before it is queued; return null to drop it. */
  beforeSend?: (event: ObserverEvent) => ObserverEvent | null | undefined;
}

/** Counters of what happened to events; drops are never silent. */
export interface Stats {
  queued: number;
  sent: number;
  retries: number;
  dropped: Record<string, number>;
}

export interface ObserverInstance {
  track(name: string, metadata?: Metadata): void;
  /** Reports an error caught by the app (an error boundary, a catch block). */
  captureException(error: unknown, metadata?: Metadata): void;
  /** Merges properties into every later event's metadata. */
  setProperties(properties: Metadata): void;
  flush(): Promise<void>;
  /** Stops capture at once, then settles after the final flush. */
  shutdown(): Promise<void>;
  optOut(): void;
  optIn(): void;
  getSessionId(): string;
  getAnonymousId(): string;
  stats(): Stats;
}

/**
 * `window.Observer` (script builds, and the loader snippet once the script has loaded): `init`,
 * `version`, and every instance method, forwarded to the running instance (while none runs, the
 * getters answer `''` and zeroed stats and the other methods do nothing).
 */
export interface ObserverGlobal extends ObserverInstance {
  init(options: ObserverOptions): ObserverInstance;
  version: string;
}

declare global {
  interface Window {
    /** Defined by observer.min.js / observer.full.min.js (or the snippet, until they load). */
    Observer?: ObserverGlobal;
  }
}
