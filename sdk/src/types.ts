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
  webVitals: boolean;
}

export interface ObserverOptions {
  apiKey: string;
  /** Base URL of the ingest API; events go to `${endpoint}/v1/events`. */
  endpoint: string;
  debug?: boolean;
  sampleRate?: number;
  respectDoNotTrack?: boolean;
  capture?: Partial<CaptureOptions>;
  flushInterval?: number;
  maxBatchSize?: number;
  maxBatchBytes?: number;
  maxQueueSize?: number;
  maxQueueBytes?: number;
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
  flush(): Promise<void>;
  shutdown(): void;
  optOut(): void;
  optIn(): void;
  getSessionId(): string;
  getAnonymousId(): string;
  stats(): Stats;
}
