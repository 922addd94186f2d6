import type { Config } from './config.js';
import type { Teardown } from './teardown.js';
import type { EventType, Metadata } from './types.js';

/** What an observer gets: a way to emit events and to register what shutdown must undo. */
export interface Ctx {
  cfg: Config;
  t: Teardown;
  now(): number;
  emit(type: EventType, metadata: Metadata, name?: string): void;
  /** Counts events an observer chose not to emit (deduplicated, rate-limited); nothing when `n` is 0. */
  drop(reason: string, n: number): void;
  /** Last click, for marking errors that follow one. */
  lastClick: { t: number; selector: string };
}
