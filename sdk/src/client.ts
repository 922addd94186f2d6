import { CircuitBreaker } from './breaker';
import { RetryBudget } from './budget';
import { resolveConfig } from './config';
import type { Config } from './config';
import { CONSENT_KEY, mayCapture } from './consent';
import type { Ctx } from './context';
import { Dispatcher } from './dispatcher';
import { fitEvent } from './event';
import { extensions } from './extensions';
import { makeLogger } from './log';
import type { Logger } from './log';
import { observeClicks } from './observers/clicks';
import { observeErrors } from './observers/errors';
import { observeNavigation } from './observers/navigation';
import { observeNetwork } from './observers/network';
import { pageView } from './observers/pageview';
import { queueStore } from './persist';
import type { QueueStore } from './persist';
import { sanitizeUrl, scrub } from './privacy';
import { EventQueue } from './queue';
import { inSample } from './sampling';
import { SessionStore } from './session';
import { webStorage } from './storage';
import type { KV } from './storage';
import { Teardown } from './teardown';
import { createTransport } from './transport';
import type { EventType, Metadata, ObserverEvent, ObserverInstance, ObserverOptions, Stats } from './types';
import { uuid } from './uuid';

export const ANON_KEY = '__observer_anon';

/** One running SDK: observers feed events through privacy and limits into the delivery queue. */
export class Client implements ObserverInstance {
  private readonly cfg: Config;
  private readonly log: Logger;
  private readonly kv: KV;
  private readonly session: SessionStore;
  private readonly anon: string;
  private readonly queue: EventQueue;
  private readonly store: QueueStore;
  private readonly dispatcher: Dispatcher;
  private readonly t: Teardown;
  private readonly ctx: Ctx;
  private hideHooks: Array<() => void> = [];
  private dropped: Record<string, number> = {};
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private dead = false;

  constructor(options: ObserverOptions, private readonly onShutdown: () => void = () => {}) {
    const cfg = (this.cfg = resolveConfig(options));
    const log = (this.log = makeLogger(cfg.debug));
    const now = () => Date.now();
    this.kv = webStorage('localStorage');
    this.session = new SessionStore(this.kv, { idleTimeout: cfg.sessionIdleTimeout, maxDuration: cfg.sessionMaxDuration });
    let anon = this.kv.get(ANON_KEY);
    if (!anon) this.kv.set(ANON_KEY, (anon = uuid()));
    this.anon = anon;
    this.store = queueStore(this.kv, webStorage('sessionStorage'), now);
    this.queue = new EventQueue({ maxCount: cfg.maxQueueSize, maxBytes: cfg.maxQueueBytes }, () => this.scheduleSave());
    for (const ev of this.store.load()) this.enqueue(ev);
    // Captured before the network observer wraps fetch: our own requests bypass our wrapper.
    const fetchFn = typeof fetch === 'function' ? fetch.bind(window) : undefined;
    this.dispatcher = new Dispatcher(
      {
        queue: this.queue,
        transport: createTransport(fetchFn, cfg.ingestUrl, cfg.apiKey, now),
        breaker: new CircuitBreaker(),
        budget: new RetryBudget(),
        timers: { now, setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>) },
        log,
        drop: (reason, n) => this.drop(reason, n),
      },
      { interval: cfg.flushInterval, maxBatchSize: cfg.maxBatchSize, maxBatchBytes: cfg.maxBatchBytes },
    );
    this.t = new Teardown((e) => log('observer error', e));
    this.ctx = {
      cfg,
      t: this.t,
      now,
      emit: (type, md, name) => this.emit(type, md, name),
      onHide: (fn) => void this.hideHooks.push(fn),
      lastClick: { t: 0, selector: '' },
    };
    if (mayCapture(this.kv, cfg.respectDoNotTrack)) this.start();
    else log('capture off (opt-out/DNT/GPC)');
  }

  track(name: string, metadata?: Metadata): void {
    this.safe(() => this.emit('custom', scrub(metadata && typeof metadata === 'object' ? metadata : {}) as Metadata, String(name)));
  }

  flush(): Promise<void> {
    return this.safe(() => (this.running ? this.dispatcher.flush() : undefined)) || Promise.resolve();
  }

  shutdown(): void {
    this.safe(() => {
      if (this.running) void this.dispatcher.flush();
      this.stop();
      this.saveNow();
      this.dead = true;
      this.onShutdown();
    });
  }

  optOut(): void {
    this.safe(() => {
      this.kv.set(CONSENT_KEY, 'out');
      this.stop();
      this.queue.clear();
      this.saveNow();
    });
  }

  optIn(): void {
    this.safe(() => {
      this.kv.set(CONSENT_KEY, 'in');
      this.start();
    });
  }

  getSessionId(): string {
    return this.safe(() => this.session.peek(Date.now())) || '';
  }

  getAnonymousId(): string {
    return this.anon;
  }

  stats(): Stats {
    return { queued: this.queue.length, sent: this.dispatcher.sent, retries: this.dispatcher.retries, dropped: { ...this.dropped } };
  }

  /** Runs `fn`; an SDK failure is logged (debug only), never thrown into the page. */
  private safe<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (e) {
      this.log('error', e);
      return undefined;
    }
  }

  private start(): void {
    if (this.running || this.dead) return;
    this.running = true;
    const { ctx, t } = this;
    const c = this.cfg.capture;
    t.listen(document, 'visibilitychange', () => document.visibilityState === 'hidden' && this.hide());
    t.listen(window, 'pagehide', () => this.hide());
    const observers: Array<[boolean, (ctx: Ctx) => void]> = [
      [c.clicks, observeClicks],
      [c.errors, observeErrors],
      [c.network, observeNetwork],
      [c.webVitals && !!extensions.vitals, (x) => extensions.vitals && extensions.vitals(x)],
      [c.navigation || c.pageViews, (x) => observeNavigation(x, c.navigation, () => c.pageViews && pageView(x, false))],
      [c.pageViews, (x) => pageView(x, true)],
    ];
    for (const [on, fn] of observers) {
      try {
        if (on) fn(ctx);
      } catch (e) {
        this.log('observer', e);
      }
    }
    this.dispatcher.start();
    t.add(() => this.dispatcher.stop());
    this.log('started', this.cfg.ingestUrl);
  }

  private stop(): void {
    this.running = false;
    this.t.run();
    this.hideHooks = [];
  }

  /** Page hidden or unloading: last observer reports, then beacon what is queued. */
  private hide(): void {
    for (const fn of this.hideHooks) {
      try {
        fn();
      } catch (e) {
        this.log('hide', e);
      }
    }
    this.dispatcher.flushOnHide();
    this.saveNow();
  }

  private emit(type: EventType, metadata: Metadata, name?: string): void {
    if (!this.running) return;
    try {
      const now = Date.now();
      const sid = this.session.touch(now);
      if (!inSample(sid, this.cfg.sampleRate)) return;
      let ev: ObserverEvent | null | undefined = {
        event_id: uuid(),
        type,
        timestamp: now,
        session_id: sid,
        url: sanitizeUrl(location.href),
        metadata,
        anonymous_id: this.anon,
      };
      if (name !== undefined) ev.name = String(name).slice(0, 200);
      if (this.cfg.beforeSend) ev = this.cfg.beforeSend(ev);
      if (!ev) return;
      this.enqueue(ev);
      this.dispatcher.notify();
    } catch (e) {
      this.log('emit', e);
    }
  }

  private enqueue(ev: ObserverEvent): void {
    const fit = fitEvent(ev);
    if (!fit) return this.drop('oversize', 1);
    const n = this.queue.push(ev, fit.json, fit.bytes);
    if (n) this.drop('queue_full', n);
  }

  private drop(reason: string, n: number): void {
    this.dropped[reason] = (this.dropped[reason] || 0) + n;
    this.log('dropped', n, reason);
  }

  private scheduleSave(): void {
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.saveNow(), 200);
  }

  private saveNow(): void {
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    this.store.save(this.queue.toJSON(), !this.queue.length);
  }
}
