import { CircuitBreaker } from './breaker.js';
import { RetryBudget } from './budget.js';
import { resolveConfig } from './config.js';
import type { Config } from './config.js';
import { CONSENT_KEY, mayCapture } from './consent.js';
import type { Ctx } from './context.js';
import { Dispatcher } from './dispatcher.js';
import { fitEvent } from './event.js';
import { extensions } from './extensions.js';
import { makeLogger } from './log.js';
import type { Logger } from './log.js';
import { observeClicks } from './observers/clicks.js';
import { errorReporter, observeErrors } from './observers/errors.js';
import type { ErrorReport } from './observers/errors.js';
import { observeNavigation } from './observers/navigation.js';
import { observeNetwork } from './observers/network.js';
import { observePageViews } from './observers/pageview.js';
import { Outbox } from './outbox.js';
import type { Persisted } from './outbox.js';
import { sanitizeUrl, scrub } from './privacy.js';
import { inSample } from './sampling.js';
import { SESSION_KEY, SessionStore } from './session.js';
import { webStorage } from './storage.js';
import type { KV } from './storage.js';
import { QUEUE_PREFIX, QueueStore, webLocks } from './store.js';
import { Teardown } from './teardown.js';
import { createTransport } from './transport.js';
import type { EventType, Metadata, ObserverEvent, ObserverInstance, ObserverOptions, Stats } from './types.js';
import { uuid } from './uuid.js';

export const ANON_KEY = '__observer_anon';
/** Writes of the outbox are at most this frequent (each one is a `storage` event in other tabs). */
const SAVE_MS = 1000;
/**
 * Ownerless queues of closed tabs are looked for at start, when a tab writes one, and this
 * often: a tab still closing when this page looked (its lock not yet free) is adopted at the
 * next look. One pass reads the key list and asks for each other queue's lock if free.
 */
export const ADOPT_MS = 5000;

/** One running SDK: observers feed events through privacy and limits into the outbox. */
export class Client implements ObserverInstance {
  readonly cfg: Config;
  /** The options init was given (compared on a second init). */
  readonly options: ObserverOptions;
  private readonly log: Logger;
  private readonly kv: KV;
  private readonly session: SessionStore;
  private anon = '';
  private readonly outbox: Outbox;
  private store: QueueStore;
  private readonly dispatcher: Dispatcher;
  private readonly t: Teardown;
  /** Lives while the SDK does, capturing or not: consent given or withdrawn in another tab. */
  private readonly storageListener = (e: Event) => this.safe(() => this.onStorage(e as StorageEvent));
  private readonly ctx: Ctx;
  private readonly report: ErrorReport;
  private dropped: Record<string, number> = {};
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private adoptTimer: ReturnType<typeof setInterval> | null = null;
  private url = ['', ''];
  private hiddenAt = 0;
  private running = false;
  private dead = false;

  constructor(options: ObserverOptions, private readonly onShutdown: () => void = () => {}) {
    this.options = options;
    const cfg = (this.cfg = resolveConfig(options));
    const log = (this.log = makeLogger(cfg.debug));
    const now = () => Date.now();
    const drop = (reason: string, n: number) => this.drop(reason, n);
    this.kv = webStorage();
    this.session = new SessionStore(this.kv, { idleTimeout: cfg.sessionIdleTimeout, maxDuration: cfg.sessionMaxDuration });
    this.store = new QueueStore(this.kv, webLocks(), now);
    this.outbox = new Outbox({ count: cfg.maxQueueSize, bytes: cfg.maxQueueBytes }, () => this.scheduleSave());
    // Captured before the network observer wraps fetch: our own requests bypass our wrapper.
    const fetchFn = typeof fetch === 'function' ? fetch.bind(window) : undefined;
    this.dispatcher = new Dispatcher(
      {
        outbox: this.outbox,
        transport: createTransport(fetchFn, cfg.ingestUrl, cfg.apiKey, now),
        breaker: new CircuitBreaker(),
        budget: new RetryBudget(),
        timers: { now, setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>) },
        log,
        online: () => navigator.onLine !== false,
        save: () => this.saveNow(),
        drop,
      },
      cfg,
    );
    this.t = new Teardown((e) => log('error', e));
    this.ctx = {
      cfg,
      t: this.t,
      now,
      emit: (type, md, name) => this.emit(type, md, name),
      drop,
      lastClick: { t: 0, selector: '' },
    };
    this.report = errorReporter(this.ctx);
    addEventListener('storage', this.storageListener);
    // A prerendered page is not seen yet: capture (its page view first) starts on activation.
    const go = () => (mayCapture(this.kv, cfg.respectDoNotTrack, cfg.defaultOptOut) ? this.start() : log('no consent: nothing captured or stored'));
    if ((document as Document & { prerendering?: boolean }).prerendering) document.addEventListener('prerenderingchange', go, { once: true });
    else go();
  }

  track(name: string, metadata?: Metadata): void {
    this.safe(() => this.emit('custom', scrub(metadata && typeof metadata === 'object' ? metadata : {}) as Metadata, String(name)));
  }

  captureException(error: unknown, metadata?: Metadata): void {
    this.safe(() => this.running && this.report('captured', error, error, metadata));
  }

  setProperties(properties: Metadata): void {
    this.safe(() => Object.assign(this.cfg.properties, scrub(properties, 500)));
  }

  flush(): Promise<void> {
    return this.safe(() => (this.running ? this.dispatcher.flush() : undefined)) || Promise.resolve();
  }

  shutdown(): Promise<void> {
    const wasRunning = this.running;
    this.safe(() => {
      this.stop(false);
      removeEventListener('storage', this.storageListener);
      this.dead = true;
      this.onShutdown();
    });
    // Capture is off at once; what is queued gets one last pass, and is kept in storage if it fails.
    const last = wasRunning ? this.dispatcher.flush() : Promise.resolve();
    return last.then(() => this.safe(() => {
      this.dispatcher.stop();
      this.saveNow();
      this.store.unclaim();
    }));
  }

  optOut(): void {
    this.safe(() => {
      this.kv.set(CONSENT_KEY, 'out');
      this.forget();
    });
  }

  optIn(): void {
    this.safe(() => {
      this.kv.set(CONSENT_KEY, 'in');
      this.start();
    });
  }

  getSessionId(): string {
    return (this.running && this.safe(() => this.session.touch(Date.now()))) || '';
  }

  getAnonymousId(): string {
    return this.anon;
  }

  stats(): Stats {
    return { queued: this.outbox.length, sent: this.dispatcher.sent, retries: this.dispatcher.retries, dropped: { ...this.dropped } };
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

  private onStorage(e: StorageEvent): void {
    if (e.key === CONSENT_KEY || e.key === null) {
      const v = this.kv.get(CONSENT_KEY);
      if (v === 'out') this.forget();
      else if (v === 'in') this.start();
    } else if (this.running && e.key && e.key.indexOf(QUEUE_PREFIX) === 0 && e.newValue)
      // Another tab wrote its queue, perhaps as it closed: its lock is free once it is gone.
      setTimeout(() => this.adopt(), 500);
  }

  /** Opt-out (here or in another tab): capture stops, every stored queue and id goes. */
  private forget(): void {
    this.stop();
    this.drop('opt_out', this.outbox.length);
    this.outbox.clear();
    this.store.purgeAll();
    this.kv.remove(SESSION_KEY);
    this.kv.remove(ANON_KEY);
    this.anon = '';
  }

  private start(): void {
    if (this.running || this.dead) return;
    this.running = true;
    const { ctx, t, cfg } = this;
    let anon = this.kv.get(ANON_KEY);
    if (!anon) this.kv.set(ANON_KEY, (anon = uuid()));
    this.anon = anon;
    // Events queued before the lock was granted are written as soon as it is.
    this.claim();
    t.listen(document, 'visibilitychange', () => document.visibilityState === 'hidden' && this.hide());
    t.listen(window, 'pagehide', () => {
      this.hide();
      this.store.unclaim(); // a page holding a Web Lock is kept out of the back/forward cache
    });
    t.listen(window, 'pageshow', (e) => (e as PageTransitionEvent).persisted && this.restored());
    t.listen(window, 'online', () => void this.dispatcher.flush());
    this.adoptTimer = setInterval(() => this.adopt(), ADOPT_MS);
    t.add(() => clearInterval(this.adoptTimer as ReturnType<typeof setInterval>));
    const c = cfg.capture;
    if (cfg.vitalsAsked && !extensions.vitals) this.log('webVitals: full build only');
    // Each observer on its own: one that fails to start (a missing API) leaves the others running.
    const run = (on: unknown, fn: (x: Ctx) => void) => on && this.safe(() => fn(ctx));
    run(c.clicks, observeClicks);
    run(c.errors, (x) => observeErrors(x, this.report));
    run(c.network, observeNetwork);
    run(c.webVitals && extensions.vitals, extensions.vitals as (x: Ctx) => void);
    run(c.navigation || c.pageViews, (x) => observeNavigation(x, c.navigation, c.pageViews ? observePageViews(x) : () => {}));
    this.dispatcher.start();
    this.log('started');
  }

  private stop(dispatcherToo = true): void {
    this.running = false;
    this.t.run();
    if (dispatcherToo) this.dispatcher.stop();
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    this.saveTimer = null;
  }

  /** Back from the back/forward cache: our queue may have been adopted meanwhile, storage says. */
  private restored(): void {
    // A frozen page misses `storage` events: an opt-out given meanwhile applies now.
    if (this.kv.get(CONSENT_KEY) === 'out') return this.forget();
    this.store = new QueueStore(this.kv, webLocks(), Date.now);
    this.outbox.clear();
    this.claim();
  }

  /** Takes this page's queue lock; events queued before it is granted are written once it is. */
  private claim(): void {
    this.store.claim(() => (this.adopt(), this.saveNow()));
  }

  /** Takes in the queues of pages that are gone (closed, crashed, restored from an old session). */
  private adopt(): void {
    if (!this.running || !this.store.owned) return;
    this.store.adoptOrphans((p: Persisted) => {
      this.outbox.absorb(p, (e) => fitEvent(e));
      this.saveNow();
      void this.dispatcher.flush();
    });
  }

  /** Page hidden or unloading: keepalive requests for what is queued, which stays stored until a 2xx. */
  private hide(): void {
    this.hiddenAt = Date.now();
    this.dispatcher.flushOnHide();
    this.saveNow();
  }

  private emit(type: EventType, metadata: Metadata, name?: string): void {
    if (!this.running) return;
    try {
      const now = Date.now();
      const sid = this.session.touch(now);
      if (!inSample(sid, this.cfg.sampleRate)) return this.drop('sampled', 1);
      // The page URL is sanitized once per distinct URL: a 50 KB URL is not rescanned per event.
      const href = location.href;
      if (this.url[0] !== href) this.url = [href, sanitizeUrl(href)];
      const md: Metadata = { ...this.cfg.properties, ...metadata };
      if (this.cfg.release) md.release = this.cfg.release;
      let ev: ObserverEvent | null | undefined = { event_id: uuid(), type, timestamp: now, session_id: sid, url: this.url[1], metadata: md, anonymous_id: this.anon };
      if (name !== undefined) ev.name = scrub(String(name), 200) as string;
      if (this.cfg.beforeSend) ev = this.cfg.beforeSend(ev);
      if (!ev) return;
      const it = fitEvent(ev);
      if (!it) return this.drop('oversize', 1);
      this.drop('queue_full', this.outbox.push(it));
      this.dispatcher.notify();
      // Reported just after the page was hidden (web vitals, a last request): out with the hide flush.
      if (now - this.hiddenAt < 2000) this.dispatcher.flushOnHide();
    } catch (e) {
      this.log('error', e);
    }
  }

  /** Counted for `stats()` (ever) and for the next client report (until a 2xx carried it). */
  private drop(reason: string, n: number): void {
    if (!n) return;
    for (const m of [this.dropped, this.dispatcher.pending]) m[reason] = (m[reason] || 0) + n;
    this.log('dropped', n, reason);
  }

  private scheduleSave(): void {
    if (this.saveTimer === null && this.running) this.saveTimer = setTimeout(() => this.saveNow(), SAVE_MS);
  }

  /** Writes the outbox within this page's share of the store cap (the oldest events go first). */
  private saveNow(): void {
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    // An opt-out in another tab may not have reached us yet: never write after one.
    if (this.kv.get(CONSENT_KEY) === 'out') return this.forget();
    if (!this.outbox.length) return this.store.save(null);
    const room = this.store.allowance();
    let json = this.outbox.toJSON();
    if (json.length > room) {
      this.drop('store_full', this.outbox.shrink(this.outbox.length, Math.max(0, this.outbox.bytes - (json.length - room)), true));
      json = this.outbox.toJSON();
    }
    this.store.save(this.outbox.length ? json : null);
  }
}
