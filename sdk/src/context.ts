import type { Config } from './config';
import type { Teardown } from './teardown';
import type { EventType, Metadata } from './types';

/** What an observer gets: a way to emit events and to register what shutdown must undo. */
export interface Ctx {
  cfg: Config;
  t: Teardown;
  now(): number;
  emit(type: EventType, metadata: Metadata, name?: string): void;
  /** Runs before the page-hide flush (e.g. to report final web vitals). */
  onHide(fn: () => void): void;
  /** Last click, for marking errors that follow one. */
  lastClick: { t: number; selector: string };
}
