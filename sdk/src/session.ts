import type { KV } from './storage';
import { uuid } from './uuid';

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
    if (!r || this.expired(r, now)) r = { id: this.newId(), start: now, last: now };
    else r.last = Math.max(r.last, now);
    this.write(r);
    return r.id;
  }

  /** The id an event at `now` would get, without recording activity. */
  peek(now: number): string {
    const r = this.read();
    return r && !this.expired(r, now) ? r.id : this.touch(now);
  }

  /** Starts a session with the given id (e.g. one carried over from a server-rendered page). */
  set(id: string, now: number): void {
    this.write({ id, start: now, last: now });
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
