#!/usr/bin/env node
// Real-browser test of the SDK: playwright-core driving the system Chromium.
//
// Env: OBSERVER_ENDPOINT (ingest API base URL; unset = a built-in fake ingest server),
//      OBSERVER_API_KEY, SCENARIO = main | backoff | shutdown | globals | failures | reports (default main),
//      OBSERVER_PAGE_PORT (fixed port for the page's origin; default random),
//      OBSERVER_BUILD = min | full (which <script> build the page loads; default min),
//      CHROMIUM_PATH (default /usr/bin/chromium).
// Prints ONE JSON line on stdout (see README "Browser test"); exits non-zero when a check fails.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { runFailurePaths } from './failures.mjs';
import { documentedMethods } from './pages.mjs';
import { closedPort, startFakeIngest, startPageServer } from './servers.mjs';

const SCENARIO = process.env.SCENARIO || 'main';
const API_KEY = process.env.OBSERVER_API_KEY || 'test-key';
const TYPED = ['hunter2-secret-pw', 'typed-text-value-77'];
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const log = (...a) => console.error('[run.mjs]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** In-page: the page's own fetch/XHR results, to compare with and without the SDK. */
async function probe(closed) {
  const viaFetch = async (url) => {
    try {
      const r = await fetch(url);
      return { status: r.status, ok: r.ok, type: r.type, isResponse: r instanceof Response, body: await r.text() };
    } catch (e) {
      return { error: e && e.name, message: e && e.message, isTypeError: e instanceof TypeError };
    }
  };
  const viaXhr = (url) =>
    new Promise((resolve) => {
      const x = new XMLHttpRequest();
      const openRet = x.open('GET', url);
      x.onload = () => resolve({ event: 'load', status: x.status, body: x.responseText, readyState: x.readyState, openRet: String(openRet) });
      x.onerror = () => resolve({ event: 'error', status: x.status, readyState: x.readyState, openRet: String(openRet) });
      const sendRet = x.send();
      if (sendRet !== undefined) resolve({ event: 'send returned a value' });
    });
  const bad = `http://127.0.0.1:${closed}/nothing`;
  let syncThrow = null;
  try {
    fetch('http://[bad').catch(() => {});
  } catch (e) {
    syncThrow = e.name;
  }
  let rejection = null;
  try {
    await fetch('http://[bad');
  } catch (e) {
    rejection = { name: e.name, isTypeError: e instanceof TypeError };
  }
  return {
    fetch_ok: await viaFetch('/ok.json'),
    fetch_404: await viaFetch('/missing'),
    fetch_fail: await viaFetch(bad),
    fetch_bad_url: { syncThrow, rejection },
    xhr_ok: await viaXhr('/ok.json'),
    xhr_404: await viaXhr('/missing'),
    xhr_fail: await viaXhr(bad),
  };
}

function initInPage({ apiKey, endpoint }) {
  const opts = { apiKey, endpoint, beforeSend: (e) => (window.__captured.push(e), e) };
  window.obs = window.Observer.init(opts);
  window.__sameInstance = window.Observer.init(opts) === window.obs;
  return { session_id: window.obs.getSessionId(), anonymous_id: window.obs.getAnonymousId(), same: window.__sameInstance };
}

async function launch() {
  const dir = mkdtempSync(join(tmpdir(), 'observer-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ARGS,
  });
  return { context, close: async () => { await context.close().catch(() => {}); rmSync(dir, { recursive: true, force: true }); } };
}

function recordRequests(context, ingestUrl) {
  const requests = [];
  const byReq = new Map();
  context.on('request', (r) => {
    if (!r.url().startsWith(ingestUrl) || r.method() !== 'POST') return;
    const rec = { t: Date.now() - t0, status: null, kind: r.resourceType(), content_type: r.headers()['content-type'] || null };
    byReq.set(r, rec);
    requests.push(rec);
  });
  context.on('response', (res) => {
    const rec = byReq.get(res.request());
    if (rec) rec.status = res.status();
  });
  context.on('requestfailed', (r) => {
    const rec = byReq.get(r);
    if (rec) rec.status = 0;
  });
  return requests;
}

async function scenarioMain({ context, endpoint, origin, fake }) {
  const ingestUrl = endpoint.replace(/\/+$/, '') + '/v1/events';
  const requests = recordRequests(context, ingestUrl);
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const closed = await closedPort();
  await page.goto(origin + '/');
  const baseline = await page.evaluate(probe, closed);
  const ids = await page.evaluate(initInPage, { apiKey: API_KEY, endpoint });
  const withSdk = await page.evaluate(probe, closed);

  await page.click('#buy');
  await page.click('#rage', { clickCount: 3, delay: 0 });
  await sleep(1100); // the error click below must not extend the rage streak
  await page.click('#boom'); // its handler throws: an error right after a click
  await page.evaluate(() => void Promise.reject(new Error('rejected in the test page')));
  await page.click('#secret-btn'); // inside data-observer-ignore: never captured
  await page.click('#pw');
  await page.keyboard.type(TYPED[0]);
  await page.click('#name');
  await page.keyboard.type(TYPED[1]);
  await page.evaluate(() => history.pushState({ step: 2 }, '', '/next?token=abc123&page=2'));
  await page.evaluate(() => window.obs.track('checkout', { plan: 'pro', contact: 'someone@example.com', card: '4242 4242 4242 4242' }));
  await sleep(300);
  await page.evaluate(() => window.obs.flush());
  await waitFor(() => page.evaluate(() => window.obs.stats().queued === 0), 20000, 'the queue to drain');

  // Left unsent on purpose: the close path (sendBeacon / keepalive) must deliver these.
  const mark = await page.evaluate(() => window.__captured.length);
  await page.evaluate(() => window.obs.track('before_close', { step: 'last' }));
  await page.click('#buy');
  const state = await page.evaluate((m) => ({ captured: window.__captured, pendingIds: window.__captured.slice(m).map((e) => e.event_id), stats: window.obs.stats() }), mark);
  const requestsBeforeClose = requests.length;
  await page.close({ runBeforeUnload: true });
  if (fake) await waitFor(() => state.pendingIds.every((id) => fake.eventIds().has(id)), 10000, 'the close-path events at the fake server').catch((e) => log(e.message));
  else await sleep(3000); // the browser must outlive the beacon
  await waitFor(() => requests.length > requestsBeforeClose || fake, 3000, 'the close-path request').catch(() => {});

  const captured = state.captured;
  const types = [...new Set(captured.map((e) => e.type))].sort();
  const net = captured.filter((e) => e.type === 'network');
  const errors = captured.filter((e) => e.type === 'error');
  const checks = {
    same_instance_on_second_init: ids.same,
    fetch_xhr_results_unchanged: JSON.stringify(baseline) === JSON.stringify(withSdk),
    types_present: ['page_view', 'click', 'rage_click', 'error', 'network', 'navigation', 'custom'].every((t) => types.includes(t)),
    one_session_id: captured.every((e) => e.session_id === ids.session_id),
    anonymous_id_on_events: captured.every((e) => e.anonymous_id === ids.anonymous_id),
    error_click_marked: errors.some((e) => e.metadata.error_click === true && /boom/.test(String(e.metadata.message))),
    unhandled_rejection: errors.some((e) => e.metadata.kind === 'unhandledrejection'),
    network_statuses: [200, 404, 0].every((s) => net.filter((e) => e.metadata.status === s).length >= 2),
    no_ingest_requests_captured: net.every((e) => !String(e.metadata.url).startsWith(ingestUrl)),
    ignored_element_not_captured: !JSON.stringify(captured).includes('secret-btn'),
    typed_values_not_captured: TYPED.every((v) => !JSON.stringify(captured).includes(v)),
    email_and_card_masked: !/someone@example\.com|4242 4242/.test(JSON.stringify(captured)),
    sensitive_query_masked: captured.some((e) => e.type === 'navigation' && String(e.metadata.to).includes('token=[redacted]')) && !JSON.stringify(captured).includes('abc123'),
    events_left_for_close: state.pendingIds.length >= 2 && state.stats.queued === state.pendingIds.length,
    no_page_errors_but_ours: pageErrors.every((m) => /boom from the test page|rejected in the test page/.test(m)),
  };
  if (fake) {
    const all = JSON.stringify(fake.received.map((r) => r.raw));
    const got = fake.eventIds();
    checks.fake_all_events_arrived = captured.every((e) => got.has(e.event_id));
    checks.fake_close_events_arrived = state.pendingIds.every((id) => got.has(id));
    checks.fake_close_path_used_text_plain = fake.received.some((r) => r.contentType.startsWith('text/plain') && r.events.some((e) => state.pendingIds.includes(e.event_id)));
    checks.fake_typed_values_nowhere = TYPED.every((v) => !all.includes(v));
  }
  return {
    scenario: 'main',
    endpoint,
    page_origin: origin,
    session_id: ids.session_id,
    anonymous_id: ids.anonymous_id,
    typed_values: TYPED,
    expected_events: captured.map((e) => ({ event_id: e.event_id, type: e.type, name: e.name ?? null, timestamp: e.timestamp })),
    expected_types: types,
    events_before_close: state.pendingIds,
    page_fetch_results: { baseline, with_sdk: withSdk, unchanged: checks.fetch_xhr_results_unchanged },
    requests,
    page_errors: pageErrors,
    fake_ingest_requests: fake ? fake.received.map((r) => ({ t: r.t, status: r.status, content_type: r.contentType, events: r.events.length })) : undefined,
    checks,
  };
}

async function scenarioBackoff({ context, endpoint, origin }) {
  const ingestUrl = endpoint.replace(/\/+$/, '') + '/v1/events';
  const plan = [[503, 1], [503, 1], [429, 2], [429, 2]]; // [status, Retry-After seconds]
  const requests = [];
  const page = await context.newPage();
  const cors = { 'Access-Control-Allow-Origin': origin, 'Access-Control-Allow-Credentials': 'true', 'Access-Control-Expose-Headers': 'Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset' };
  await page.route((u) => u.href.startsWith(ingestUrl), async (route) => {
    const req = route.request();
    if (req.method() !== 'POST') return route.fallback();
    const t = Date.now() - t0;
    const step = plan[requests.length];
    if (step) {
      const [status, after] = step;
      requests.push({ t, status, retry_after: after });
      return route.fulfill({
        status,
        contentType: 'application/json',
        headers: { ...cors, 'Retry-After': String(after), 'X-RateLimit-Limit': '10', 'X-RateLimit-Remaining': status === 429 ? '0' : '5', 'X-RateLimit-Reset': String(Math.ceil(Date.now() / 1000) + after) },
        body: JSON.stringify({ error: { code: status === 429 ? 'rate_limited' : 'unavailable', message: 'test', request_id: 'test' } }),
      });
    }
    const rec = { t, status: null };
    requests.push(rec);
    try {
      const res = await route.fetch();
      rec.status = res.status();
      return route.fulfill({ response: res });
    } catch (e) {
      rec.status = 0;
      return route.abort();
    }
  });
  await page.goto(origin + '/');
  const ids = await page.evaluate(initInPage, { apiKey: API_KEY, endpoint });
  await page.click('#buy');
  for (let i = 0; i < 3; i++) await page.evaluate((n) => window.obs.track('backoff_probe', { n }), i);
  await page.evaluate(() => window.obs.flush());
  await waitFor(() => page.evaluate(() => window.obs.stats().queued === 0), 90000, 'delivery after the API recovers');
  const state = await page.evaluate(() => ({ captured: window.__captured, stats: window.obs.stats() }));
  await page.close();
  const gaps = requests.slice(1).map((r, i) => r.t - requests[i].t);
  const checks = {
    failures_first: requests.slice(0, plan.length).map((r) => r.status).join() === plan.map((p) => p[0]).join(),
    waited_retry_after: plan.every(([, after], i) => gaps[i] === undefined || gaps[i] >= after * 1000 - 100),
    recovered: requests.length > plan.length && requests.slice(plan.length).every((r) => r.status === 202),
    all_delivered: state.stats.queued === 0 && Object.keys(state.stats.dropped).length === 0,
    retries_counted: state.stats.retries >= plan.length,
  };
  return {
    scenario: 'backoff',
    endpoint,
    page_origin: origin,
    session_id: ids.session_id,
    anonymous_id: ids.anonymous_id,
    event_ids: state.captured.map((e) => e.event_id),
    expected_events: state.captured.map((e) => ({ event_id: e.event_id, type: e.type, name: e.name ?? null, timestamp: e.timestamp })),
    requests,
    gaps_ms: gaps,
    stats: state.stats,
    checks,
  };
}

async function scenarioShutdown({ context, endpoint, origin }) {
  const page = await context.newPage();
  const checks = {};
  // A: another library wraps fetch and XHR after the SDK.
  await page.goto(origin + '/counted.html');
  const base = await page.evaluate(() => window.__listeners.count());
  await page.evaluate(initInPage, { apiKey: API_KEY, endpoint });
  checks.sdk_patched_fetch = await page.evaluate(() => window.fetch !== window.__orig.fetch && XMLHttpRequest.prototype.send !== window.__orig.send);
  checks.sdk_added_listeners = (await page.evaluate(() => window.__listeners.sdk())) >= 3;
  await page.addScriptTag({ url: '/other-wrapper.js' });
  await page.click('#buy');
  await sleep(100);
  checks.double_load_single_click = (await page.evaluate(() => window.__captured.filter((e) => e.type === 'click').length)) === 1;
  const a = await page.evaluate(async () => {
    window.obs.shutdown();
    const n = window.__captured.length;
    const r = await fetch('/ok.json');
    const body = await r.json();
    const xhr = await new Promise((res) => {
      const x = new XMLHttpRequest();
      x.open('GET', '/ok.json');
      x.onloadend = () => res(x.status);
      x.send();
    });
    history.pushState({}, '', '/after-shutdown');
    return {
      fetch_is_other_wrapper: window.fetch === window.__other.fetchWrapper,
      open_is_other_wrapper: XMLHttpRequest.prototype.open === window.__other.openWrapper,
      send_is_other_wrapper: XMLHttpRequest.prototype.send === window.__other.sendWrapper,
      push_state_restored: history.pushState === window.__orig.pushState && history.replaceState === window.__orig.replaceState,
      fetch_still_works: r.status === 200 && body.answer === 42 && window.__other.calls.fetch >= 1,
      xhr_still_works: xhr === 200 && window.__other.calls.send >= 1,
      nothing_captured_after_shutdown: window.__captured.length === n,
      sdk_listeners_removed: window.__listeners.sdk() === 0,
      leftover: window.__listeners.list().filter((l) => l.sdk),
    };
  });
  await page.click('#buy');
  checks.no_click_after_shutdown = (await page.evaluate(() => window.__captured.filter((e) => e.type === 'click').length)) === 1;
  for (const k of Object.keys(a)) if (typeof a[k] === 'boolean') checks[k] = a[k];

  // B: nothing wrapped after the SDK: every global goes back to the very original; init works again after shutdown.
  await page.goto(origin + '/counted.html');
  const b = await page.evaluate(async ({ apiKey, endpoint }) => {
    const base = window.__listeners.count();
    const first = window.Observer.init({ apiKey, endpoint });
    const during = window.__listeners.sdk();
    first.shutdown();
    const second = window.Observer.init({ apiKey, endpoint, beforeSend: (e) => (window.__captured.push(e), e) });
    const fresh = second !== first;
    await fetch('/ok.json');
    await new Promise((r) => setTimeout(r, 50));
    const capturedAgain = window.__captured.some((e) => e.type === 'network');
    second.shutdown();
    const o = window.__orig;
    return {
      init_after_shutdown_is_new: fresh,
      init_after_shutdown_captures: capturedAgain,
      fetch_restored: window.fetch === o.fetch,
      xhr_open_send_restored: XMLHttpRequest.prototype.open === o.open && XMLHttpRequest.prototype.send === o.send,
      history_restored: history.pushState === o.pushState && history.replaceState === o.replaceState,
      listeners_added_then_restored: during >= 3 && window.__listeners.count() === base && window.__listeners.sdk() === 0,
      leftover: window.__listeners.list(),
    };
  }, { apiKey: API_KEY, endpoint });
  for (const k of Object.keys(b)) if (typeof b[k] === 'boolean') checks[k] = b[k];
  await page.close();
  return { scenario: 'shutdown', endpoint, page_origin: origin, listeners_before: base, leftover_listeners: [...a.leftover, ...b.leftover], checks };
}

/**
 * `window.Observer` has every documented method, the getters included, and they answer the
 * running instance's values: (A) the <script> build; (B) the README's loader snippet, before the
 * script arrives (held by the test) and after. Old builds lacked the getters on the global.
 */
async function scenarioGlobals({ context, endpoint, origin, fake }) {
  const methods = documentedMethods();
  const ZERO = JSON.stringify({ queued: 0, sent: 0, retries: 0, dropped: {} });
  const checks = {};
  // In the page: every getter read through window.Observer (or an object given), a throw recorded, not raised.
  const readGlobals = (names) => {
    const O = window.__kept || window.Observer;
    const call = (m) => { try { return O[m](); } catch (e) { return 'threw: ' + e.message; } };
    return { missing: names.filter((m) => typeof O[m] !== 'function'), session: call('getSessionId'), anon: call('getAnonymousId'), stats: JSON.stringify(call('stats')) };
  };

  // A: the script build (the test page loads it twice).
  const page = await context.newPage();
  await page.goto(origin + '/');
  const idle = await page.evaluate(readGlobals, methods);
  checks.script_every_documented_method = idle.missing.length === 0;
  checks.script_idle_before_init = idle.session === '' && idle.anon === '' && idle.stats === ZERO;
  await page.evaluate(initInPage, { apiKey: API_KEY, endpoint });
  await page.evaluate(() => window.Observer.track('via_global', { step: 'script' }));
  await page.evaluate(() => window.Observer.flush());
  await waitFor(() => page.evaluate(() => window.obs.stats().queued === 0), 20000, 'the script page queue to drain');
  const live = await page.evaluate(readGlobals, methods);
  const inst = await page.evaluate(() => ({ session: window.obs.getSessionId(), anon: window.obs.getAnonymousId(), stats: JSON.stringify(window.obs.stats()), captured: window.__captured }));
  checks.script_session_id_live = !!inst.session && live.session === inst.session;
  checks.script_anonymous_id_live = !!inst.anon && live.anon === inst.anon;
  checks.script_stats_live = live.stats === inst.stats && JSON.parse(live.stats).sent >= 2;
  checks.script_ids_on_events = inst.captured.length >= 2 && inst.captured.every((e) => e.session_id === live.session && e.anonymous_id === live.anon);
  await page.evaluate(() => window.Observer.shutdown());
  const after = await page.evaluate(readGlobals, methods);
  checks.script_idle_after_shutdown = after.session === '' && after.anon === '' && after.stats === ZERO;
  await page.close();

  // B: the README's snippet; the script is held until the test lets it through.
  const snip = await context.newPage();
  let release;
  const held = new Promise((r) => (release = r));
  await snip.route((u) => /\/observer(\.full)?\.min\.js$/.test(u.pathname), async (route) => {
    await held;
    return route.continue();
  });
  await snip.goto(origin + '/snippet', { waitUntil: 'domcontentloaded' });
  const before = await snip.evaluate((names) => {
    const O = window.Observer;
    window.__kept = O;
    window.__captured = [];
    return { version: O.version || null, queue: Array.isArray(O.q), missing: names.filter((m) => typeof O[m] !== 'function'), session: O.getSessionId(), anon: O.getAnonymousId(), stats: JSON.stringify(O.stats()) };
  }, methods);
  checks.snippet_stub_before_load = before.version === null && before.queue;
  checks.snippet_every_documented_method_before_load = before.missing.length === 0;
  checks.snippet_idle_getters_before_load = before.session === '' && before.anon === '' && before.stats === ZERO;
  const queued = await snip.evaluate(({ apiKey, endpoint }) => {
    const O = window.Observer;
    const settle = (p, key) => { window[key] = 'pending'; if (p && p.then) p.then((v) => (window[key] = v === undefined ? 'settled' : v)); return !!(p && p.then); };
    const a = settle(O.init({ apiKey, endpoint, beforeSend: (e) => (window.__captured.push(e), e) }), '__initResult');
    const b = settle(O.track('queued_before_load', { step: 'snippet' }), '__trackResult');
    const c = settle(O.flush(), '__flushResult');
    return { promises: a && b && c, queue_length: O.q.length };
  }, { apiKey: API_KEY, endpoint });
  checks.snippet_calls_return_promises = queued.promises && queued.queue_length === 3;
  release();
  await waitFor(() => snip.evaluate(() => !!window.Observer.version), 20000, 'the SDK script to load');
  // The replayed flush settles its promise after its send (or never, with a build that ignores resolvers).
  const flushed = await waitFor(() => snip.evaluate(() => window.__flushResult !== 'pending'), 15000, 'the snippet flush promise').then(() => true, () => false);
  checks.snippet_flush_promise_settles = flushed;
  const got = await snip.evaluate((names) => {
    const kept = window.__kept;
    const call = (m) => { try { return kept[m](); } catch (e) { return 'threw: ' + e.message; } };
    const inst = window.__initResult;
    const own = inst && typeof inst.getSessionId === 'function' ? { session: inst.getSessionId(), anon: inst.getAnonymousId(), stats: JSON.stringify(inst.stats()) } : null;
    return {
      same_object: window.Observer === kept,
      queue_gone: !('q' in kept),
      missing: names.filter((m) => typeof kept[m] !== 'function'),
      session: call('getSessionId'),
      anon: call('getAnonymousId'),
      stats: JSON.stringify(call('stats')),
      own,
      captured: window.__captured,
    };
  }, methods);
  checks.snippet_same_object_after_load = got.same_object && got.queue_gone;
  checks.snippet_every_documented_method_after_load = got.missing.length === 0;
  checks.snippet_init_promise_gives_instance = !!got.own;
  checks.snippet_session_id_live = !!got.own && !!got.own.session && got.session === got.own.session;
  checks.snippet_anonymous_id_live = !!got.own && !!got.own.anon && got.anon === got.own.anon;
  checks.snippet_stats_live = !!got.own && got.stats === got.own.stats;
  checks.snippet_sent_before_flush_settled = flushed && JSON.parse(got.stats || '{}').sent >= 2;
  checks.snippet_ids_on_events = got.captured.some((e) => e.name === 'queued_before_load') && got.captured.every((e) => e.session_id === got.session && e.anonymous_id === got.anon);
  await snip.evaluate(() => window.Observer.shutdown());
  await snip.close();
  const events = [...inst.captured, ...got.captured].map((e) => ({ event_id: e.event_id, type: e.type, name: e.name ?? null, session_id: e.session_id, anonymous_id: e.anonymous_id }));
  if (fake) {
    const ids = fake.eventIds();
    checks.fake_all_events_arrived = events.every((e) => ids.has(e.event_id));
  }
  return {
    scenario: 'globals',
    endpoint,
    page_origin: origin,
    documented_methods: methods,
    script: { idle, live, after_shutdown: after },
    snippet: { before, queued, after_load: { ...got, captured: undefined } },
    sessions: { script: live.session, snippet: got.session },
    anonymous_ids: { script: live.anon, snippet: got.anon },
    expected_events: events,
    checks,
  };
}

/**
 * Client reports (issue 22): the page drops events for several reasons (a full queue, the error
 * rate limit, a repeated error, an oversize event), the answer to the request carrying their
 * report is lost (the server got it; the page sees a network error), the SDK sends the report
 * again with the same id, and the server counts each reason once with the page's own counts.
 * Then an event the server refuses (its verdict in the debug console, its drop in the next
 * report) and an offline spell (said once in the debug console). Loads the full build (its
 * debug mode prints each refused event); works against the fake ingest or a real server.
 */
async function scenarioReports({ context, endpoint, origin, fake }) {
  const ingestUrl = endpoint.replace(/\/+$/, '') + '/v1/events';
  const posts = []; // { t, report, names, status, answer, lost }
  let loseNext = true;
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  await page.route((u) => u.href.startsWith(ingestUrl), async (route) => {
    const req = route.request();
    if (req.method() !== 'POST') return route.fallback();
    let body = {};
    try {
      body = JSON.parse(req.postData() || '{}');
    } catch { /* not JSON */ }
    const rec = { t: Date.now() - t0, report: body.client_report || null, names: (body.events || []).map((e) => e.name || e.type), status: null, answer: null, lost: false };
    posts.push(rec);
    try {
      const res = await route.fetch();
      rec.status = res.status();
      try {
        rec.answer = await res.json();
      } catch { /* not JSON */ }
      // The first answer to a request carrying a report is lost: the server has it, the page does not.
      if (rec.report && loseNext) {
        loseNext = false;
        rec.lost = true;
        return route.abort('failed');
      }
      return route.fulfill({ response: res });
    } catch {
      rec.status = 0;
      return route.abort();
    }
  });
  await page.goto(origin + '/full');
  const none = { clicks: false, errors: false, network: false, navigation: false, pageViews: false, webVitals: false };
  await page.evaluate(({ apiKey, endpoint, capture }) => {
    window.obs = window.Observer.init({
      apiKey, endpoint, capture, debug: true, flushInterval: 600000, maxQueueSize: 5,
      // `make_invalid` leaves with a type the server refuses.
      beforeSend: (e) => (e.name === 'make_invalid' && (e.type = 'bogus'), window.__captured.push(e), e),
    });
  }, { apiKey: API_KEY, endpoint, capture: none });
  const dropped = await page.evaluate(() => {
    for (let i = 0; i < 13; i++) window.obs.captureException(new Error('distinct error ' + i)); // 10 sent, 3 over the rate
    window.obs.captureException(new Error('distinct error 0')); // a repeat
    const huge = {};
    for (let i = 0; i < 250; i++) huge['k' + i] = 'x'.repeat(1000);
    window.obs.track('too_big', huge); // over 10 KiB even cut: oversize
    return window.obs.stats().dropped;
  });
  await page.evaluate(() => window.obs.flush()); // its answer is lost
  await waitFor(() => page.evaluate(() => window.obs.stats().queued === 0), 30000, 'the batch to be delivered after the lost answer');
  const afterFirst = await page.evaluate(() => window.obs.stats().dropped);
  // An event the server refuses: counted as `rejected`, reported with the batch after.
  await page.evaluate(() => (window.obs.track('make_invalid'), window.obs.track('fine_1'), window.obs.flush()));
  await page.evaluate(() => (window.obs.track('fine_2'), window.obs.flush()));
  // Offline: events held, said once however many passes find the browser offline.
  await context.setOffline(true);
  await page.evaluate(() => window.obs.track('while_offline'));
  for (let i = 0; i < 3; i++) {
    await page.evaluate(() => window.obs.flush());
    await sleep(200);
  }
  const postsWhileOffline = posts.length;
  await context.setOffline(false); // the `online` event sends at once
  await waitFor(() => page.evaluate(() => window.obs.stats().queued === 0), 20000, 'delivery once back online');
  const final = await page.evaluate(() => window.obs.stats());
  await page.close();

  const withReport = posts.filter((p) => p.report);
  const first = withReport[0];
  const sameFirst = withReport.filter((p) => first && p.report.id === first.report.id);
  // What the server counted: each id once, from the answers that said `counted`.
  const counted = {};
  for (const p of posts) if (p.report && p.answer && p.answer.client_report === 'counted') for (const [k, v] of Object.entries(p.report.dropped)) counted[k] = (counted[k] || 0) + v;
  const reasons = Object.keys(dropped);
  const sentLines = consoleLines.filter((l) => /^\[observer\] sent /.test(l));
  const checks = {
    three_reasons_or_more: reasons.length >= 3 && ['queue_full', 'rate_limited', 'oversize'].every((r) => dropped[r] > 0),
    first_report_as_dropped: !!first && JSON.stringify(first.report.dropped) === JSON.stringify(dropped),
    report_id_uuid_v4: !!first && /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(first.report.id),
    first_answer_lost: !!first && first.lost && first.status === 202 && first.answer.client_report === 'counted',
    resent_with_same_id: sameFirst.length >= 2 && sameFirst.every((p) => JSON.stringify(p.report) === JSON.stringify(first.report)),
    resend_a_duplicate: sameFirst.slice(1).some((p) => p.status === 202 && p.answer && p.answer.client_report === 'duplicate'),
    no_new_drops_meanwhile: JSON.stringify(afterFirst) === JSON.stringify(dropped),
    rejected_counted_and_reported: final.dropped.rejected === 1 && withReport.some((p) => p.report.id !== first.report.id && JSON.stringify(p.report.dropped) === '{"rejected":1}'),
    forgotten_after_2xx: posts.filter((p) => p.report && p.report.id === first.report.id && !p.lost).length === sameFirst.length - 1 && posts.some((p) => !p.report && p.status === 202),
    server_counted_each_reason_once: JSON.stringify(Object.fromEntries(Object.entries(counted).sort())) === JSON.stringify(Object.fromEntries(Object.entries(final.dropped).sort())),
    debug_verdict_lines: sentLines.length >= posts.length - 1 && sentLines.some((l) => /rejected bogus [0-9a-f-]{36}: \w+/.test(l)) && sentLines.some((l) => /client report duplicate/.test(l)),
    offline_said_once: consoleLines.filter((l) => l.includes('offline: holding')).length === 1,
    nothing_sent_offline: posts.slice(postsWhileOffline).every((p) => p.status !== 0) && posts.length > postsWhileOffline,
  };
  if (fake) checks.fake_totals_match_page = JSON.stringify(Object.fromEntries(Object.entries(fake.reportTotals()).sort())) === JSON.stringify(Object.fromEntries(Object.entries(final.dropped).sort()));
  return { scenario: 'reports', endpoint, page_origin: origin, dropped_before_send: dropped, final_stats: final, counted, posts, console: consoleLines, checks };
}

/** The failure paths (failures.mjs), each in browsers of its own: one check per path and property. */
async function scenarioFailures({ endpoint, origin }) {
  const paths = await runFailurePaths({ endpoint, origin, apiKey: API_KEY });
  const checks = {};
  for (const p of paths) {
    checks[p.path + ':ran'] = !p.error;
    checks[p.path + ':every_produced_event_delivered'] = p.delivered_2xx === p.produced.length;
    checks[p.path + ':none_sent_twice'] = !!p.sent_twice && (p.resend_expected || p.sent_twice.length === 0);
    checks[p.path + ':none_of_the_purged_sent'] = !!p.absent_sent && p.absent_sent.length === 0;
    for (const [k, v] of Object.entries(p.checks || {})) checks[p.path + ':' + k] = v;
  }
  return { scenario: 'failures', endpoint, page_origin: origin, paths, checks };
}

const SCENARIOS = { main: scenarioMain, backoff: scenarioBackoff, shutdown: scenarioShutdown, globals: scenarioGlobals, failures: scenarioFailures, reports: scenarioReports };

async function main() {
  const run = SCENARIOS[SCENARIO];
  if (!run) throw new Error(`unknown SCENARIO ${SCENARIO} (main | backoff | shutdown | globals | failures | reports)`);
  const fake = process.env.OBSERVER_ENDPOINT ? null : await startFakeIngest(API_KEY);
  const endpoint = (process.env.OBSERVER_ENDPOINT || fake.url).replace(/\/+$/, '');
  const pages = await startPageServer({ port: Number(process.env.OBSERVER_PAGE_PORT || 0), build: process.env.OBSERVER_BUILD || 'min' });
  const browser = SCENARIO === 'failures' ? { context: null, close: async () => {} } : await launch();
  let result;
  try {
    result = await run({ context: browser.context, endpoint, origin: pages.origin, fake });
  } finally {
    await browser.close();
    await pages.close();
    if (fake) await fake.close();
  }
  const failed = Object.entries(result.checks).filter(([, v]) => v !== true).map(([k]) => k);
  result.fake_ingest = !!fake;
  result.failed = failed;
  result.ok = failed.length === 0;
  process.stdout.write(JSON.stringify(result) + '\n');
  if (failed.length) log('FAILED checks:', failed.join(', '));
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log(e && e.stack ? e.stack : e);
    process.stdout.write(JSON.stringify({ scenario: SCENARIO, ok: false, error: String(e && e.message) }) + '\n');
    process.exit(2);
  },
);
