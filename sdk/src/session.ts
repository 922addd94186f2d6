import type { KV } from './storage.js';
import { uuid } from './uuid.js';

export interface SessionRules {
  /** Rotate after this long without activity (ms). */
  idleTimeout: number;
  /** Rotate once the session is this old (ms). */
  maxDuration: number;
}

interface SessionRecord {
  id: string;
  start: number;
  last: number;
}

export const SESSION_KEY = '__observer_session';
/** Activity is recorded this coarsely; idle timeouts are minutes, so seconds of slack are harmless. */
export const WRITE_MS = 5000;

/**
 * The session id lives in localStorage so every tab of an origin shares it; each tab
 * re-reads it on every event, so a rotation made by one tab is seen by the others.
 */
export class SessionStore {
  constructor(
    private readonly kv: KV,
    private readonly rules: SessionRules,
    private readonly newId: () => string = uuid,
  ) {}

  /** The current session id at `now`, rotated if idle or too old; records activity. */
  touch(now: number): string {
    let r = this.read();
    if (!r || this.expired(r, now)) this.write((r = { id: this.newId(), start: now, last: now }));
    // Activity is written at most every WRITE_MS: each write is a `storage` event in every other tab.
    else if (now - r.last >= Math.min(WRITE_MS, this.rules.idleTimeout / 10)) this.write({ ...r, last: now });
    return r.id;
  }

  private expired(r: SessionRecord, now: number): boolean {
    return now - r.last > this.rules.idleTimeout || now - r.start > this.rules.maxDuration || now < r.start - 60000;
  }

  private read(): SessionRecord | null {
    try {
      const r = JSON.parse(this.kv.get(SESSION_KEY) || 'null') as SessionRecord | null;
      return r && typeof r.id === 'string' && typeof r.start === 'number' && typeof r.last === 'number' ? r : null;
    } catch {
      return null;
    }
  }

  private write(r: SessionRecord): void {
    this.kv.set(SESSION_KEY, JSON.stringify(r));
  }
}
