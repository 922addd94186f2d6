// Failure paths of delivery, consent and page cost in real Chromium, against the real pipeline
// behind a fault proxy (pass through, or 503). Each path reports the event ids the page produced
// (as seen by `beforeSend`), the ids it must never deliver, and what the proxy saw delivered;
// tests/e2e/test_browser.py then checks ClickHouse and UFSE for them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startFaultProxy } from './servers.mjs';

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('[failures]', ...a);

async function waitFor(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Options every page starts the SDK with; `beforeSend` records what the page produced. */
function initScript({ apiKey, endpoint, extra }) {
  window.__captured = [];
  window.__obsOptions = Object.assign({ apiKey, endpoint, beforeSend: (e) => (window.__captured.push({ id: e.event_id, type: e.type, name: e.name || null, url: e.url }), e) }, extra || {});
}

async function launch(dir, ctx) {
  const context = await chromium.launchPersistentContext(dir, { executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium', headless: true, args: ARGS });
  await context.addInitScript(initScript, ctx);
  return context;
}

/**
 * Closes a page as a user would (pagehide and visibilitychange run) and waits until it is gone:
 * with runBeforeUnload Playwright does not wait, and on a busy machine a closing page can hold
 * its queue's lock for seconds after the next load has started.
 */
async function closeAndWait(page, timeoutMs = 20000) {
  const gone = new Promise((resolve) => page.once('close', resolve));
  await page.close({ runBeforeUnload: true });
  await Promise.race([gone, sleep(timeoutMs).then(() => { throw new Error('the page did not close within ' + timeoutMs + ' ms'); })]);
}

const captured = (page) => page.evaluate(() => window.__captured.map((e) => e.id));
const queued = (page) => page.evaluate(() => window.obs.stats().queued);
const storageKeys = (page) => page.evaluate(() => Object.keys(localStorage).sort());
const track = (page, name, n) => page.evaluate(([name, n]) => { for (let i = 0; i < n; i++) window.obs.track(name, { i }); }, [name, n]);

/** Runs every path; returns their reports. */
export async function runFailurePaths({ endpoint, origin, apiKey }) {
  const proxy = await startFaultProxy(endpoint);
  const dirs = [];
  const newDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'observer-fail-'));
    dirs.push(d);
    return d;
  };
  const base = { apiKey, endpoint: proxy.url };
  const reports = [];
  const run = async (name, fn) => {
    const t = Date.now();
    log(name, 'start', new Date().toISOString());
    proxy.set('pass');
    const from = proxy.log.length;
    try {
      const r = await fn();
      const sent = new Map();
      for (const rec of proxy.log.slice(from)) if (rec.status >= 200 && rec.status < 300) for (const id of rec.ids) sent.set(id, (sent.get(id) || 0) + 1);
      r.delivered_2xx = r.produced.filter((id) => sent.has(id)).length;
      r.sent_twice = r.produced.filter((id) => (sent.get(id) || 0) > 1);
      r.absent_sent = (r.absent || []).filter((id) => sent.has(id));
      r.requests = proxy.log.slice(from).map((x) => [x.status, x.ids.length, x.plain ? 'text/plain' : 'json']);
      r.ms = Date.now() - t;
      reports.push({ path: name, ...r });
      log(name, 'produced', r.produced.length, 'delivered', r.delivered_2xx, 'in', r.ms, 'ms');
    } catch (e) {
      reports.push({ path: name, error: String(e && e.stack ? e.stack : e), produced: [], checks: { ran: false } });
      log(name, 'FAILED', e);
    }
  };

  // 1. Offline, then online: nothing is attempted offline; the `online` event sends it all.
  await run('offline_then_online', async () => {
    const context = await launch(newDir(), base);
    const page = await context.newPage();
    await page.goto(origin + '/auto');
    await context.setOffline(true);
    await track(page, 'offline', 10);
    await page.click('#buy');
    await sleep(1500);
    const attemptsOffline = proxy.log.length;
    const keptOffline = await queued(page);
    await context.setOffline(false);
    await waitFor(async () => (await queued(page)) === 0, 20000, 'delivery once online');
    const produced = await captured(page);
    await context.close();
    return { produced, checks: { kept_while_offline: keptOffline >= 11, delivered_once_online: true }, notes: { kept_offline: keptOffline, proxy_log_while_offline: attemptsOffline } };
  });

  // 2. 5xx while the page hides, then the next load: the hide's keepalive requests get 503,
  //    the events stay stored, and the next page load adopts and sends them (same batches).
  await run('5xx_on_hide_then_next_load', async () => {
    const context = await launch(newDir(), base);
    proxy.set('503');
    const page = await context.newPage();
    await page.goto(origin + '/auto');
    await track(page, 'during_outage', 20);
    const first = await captured(page);
    const stored = (await storageKeys(page)).filter((k) => k.startsWith('__observer_q:')).length;
    const before = proxy.log.length;
    await closeAndWait(page); // pagehide + visibilitychange: the hide flush
    await sleep(1500);
    const hideRequests = proxy.log.slice(before).filter((r) => r.plain).length;
    proxy.set('pass');
    const next = await context.newPage();
    await next.goto(origin + '/auto');
    try {
      await waitFor(async () => (await queued(next)) === 0 && proxy.delivered().has(first[first.length - 1]), 30000, 'the next load to deliver');
    } catch (e) {
      // What the pages and the proxy saw, so a timeout says which step stalled.
      const seen = await next.evaluate(() => ({ stats: window.obs.stats(), keys: Object.keys(localStorage) })).catch((x) => String(x));
      const delivered = proxy.delivered();
      throw new Error(`${e.message}: ${JSON.stringify({ pages_open: context.pages().length, queues_stored_before_close: stored, hide_requests: hideRequests, first: first.length,
        first_delivered: first.filter((id) => delivered.has(id)).length, next: seen,
        requests: proxy.log.slice(before).map((x) => [x.status, x.ids.length, x.plain ? 'text/plain' : 'json', x.t || '']) })}`);
    }
    const produced = first.concat(await captured(next));
    await context.close();
    return { produced, checks: { hide_sent_keepalive: hideRequests >= 1 }, notes: { hide_requests_503: hideRequests } };
  });

  // 3. Two tabs through an outage; one closes with events queued: the other adopts them.
  await run('two_tabs', async () => {
    const context = await launch(newDir(), base);
    proxy.set('503');
    const a = await context.newPage();
    const b = await context.newPage();
    await a.goto(origin + '/auto');
    await b.goto(origin + '/auto');
    await track(a, 'tab_a', 8);
    await track(b, 'tab_b', 8);
    await sleep(1200);
    const fromA = await captured(a);
    await closeAndWait(a);
    await sleep(1000);
    proxy.set('pass');
    await b.evaluate(() => window.obs.flush());
    await waitFor(async () => (await queued(b)) === 0 && fromA.every((id) => proxy.delivered().has(id)), 40000, "tab B to deliver tab A's events");
    const produced = fromA.concat(await captured(b));
    await context.close();
    return { produced, checks: {} };
  });

  // 4. A restored browser: the queue of the last session is left in storage; two restored tabs
  //    open at once and exactly one of them adopts it.
  await run('restored_tabs', async () => {
    const dir = newDir();
    let context = await launch(dir, base);
    proxy.set('503');
    const page = await context.newPage();
    await page.goto(origin + '/auto');
    await track(page, 'before_quit', 12);
    await page.evaluate(() => window.obs.flush());
    await sleep(1500);
    const first = await captured(page);
    await context.close(); // the browser quits with the events stored
    proxy.set('pass');
    context = await launch(dir, base);
    const [p1, p2] = await Promise.all([context.newPage(), context.newPage()]);
    await Promise.all([p1.goto(origin + '/auto'), p2.goto(origin + '/auto')]);
    await waitFor(async () => first.every((id) => proxy.delivered().has(id)), 40000, 'the restored tabs to deliver');
    await Promise.all([p1.evaluate(() => window.obs.flush()), p2.evaluate(() => window.obs.flush())]);
    await waitFor(async () => (await queued(p1)) === 0 && (await queued(p2)) === 0, 20000, 'both tabs drained');
    const produced = first.concat(await captured(p1), await captured(p2));
    await context.close();
    return { produced, checks: {} };
  });

  // 5. A duplicated tab (window.open copies sessionStorage): each tab keeps its own queue.
  await run('duplicated_tab', async () => {
    const context = await launch(newDir(), base);
    proxy.set('503');
    const a = await context.newPage();
    await a.goto(origin + '/auto');
    await track(a, 'original', 6);
    await sleep(1200);
    const [dup] = await Promise.all([context.waitForEvent('page'), a.evaluate(() => window.open(location.href))]);
    await dup.waitForLoadState();
    await track(dup, 'duplicate', 6);
    await track(a, 'original_after', 3);
    await sleep(1200);
    proxy.set('pass');
    await Promise.all([a.evaluate(() => window.obs.flush()), dup.evaluate(() => window.obs.flush())]);
    await waitFor(async () => (await queued(a)) === 0 && (await queued(dup)) === 0, 40000, 'both tabs drained');
    const produced = (await captured(a)).concat(await captured(dup));
    await context.close();
    return { produced, checks: {} };
  });

  // 6. DNT/GPC: nothing stored (not even an id) and nothing sent until optIn.
  await run('dnt', async () => {
    const context = await launch(newDir(), base);
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1', configurable: true });
      Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true });
    });
    const page = await context.newPage();
    const before = proxy.log.length;
    await page.goto(origin + '/auto');
    await page.click('#buy');
    await track(page, 'dnt', 3);
    await sleep(1500);
    const keys = await storageKeys(page);
    const nothingCaptured = (await captured(page)).length === 0;
    const requests = proxy.log.length - before;
    await page.evaluate(() => window.obs.optIn());
    await track(page, 'after_opt_in', 2);
    await page.evaluate(() => window.obs.flush());
    await waitFor(async () => (await queued(page)) === 0, 20000, 'delivery after optIn');
    const produced = await captured(page);
    await context.close();
    return { produced, checks: { nothing_stored_before_consent: keys.length === 0, nothing_captured: nothingCaptured, nothing_sent: requests === 0 }, notes: { storage_keys_before_consent: keys } };
  });

  // 7. Opt-out in another tab: it stops this tab at once and purges every stored queue.
  await run('opt_out_in_other_tab', async () => {
    const context = await launch(newDir(), base);
    const a = await context.newPage();
    const b = await context.newPage();
    await a.goto(origin + '/auto');
    await b.goto(origin + '/auto');
    await Promise.all([a.evaluate(() => window.obs.flush()), b.evaluate(() => window.obs.flush())]);
    await waitFor(async () => (await queued(a)) === 0 && (await queued(b)) === 0, 20000, 'the page views to arrive');
    const delivered = (await captured(a)).concat(await captured(b));
    proxy.set('503');
    await track(a, 'queued_a', 5);
    await track(b, 'queued_b', 5);
    await sleep(1500);
    const purged = (await captured(a)).concat(await captured(b)).filter((id) => !delivered.includes(id));
    await a.evaluate(() => window.obs.optOut());
    await sleep(300);
    const bKeys = await storageKeys(b);
    const bQueued = await queued(b);
    const nB = (await captured(b)).length;
    await track(b, 'after_opt_out', 3);
    await b.click('#buy');
    const capturedAfter = (await captured(b)).length - nB;
    proxy.set('pass');
    await sleep(3000);
    await context.close();
    return {
      produced: delivered,
      absent: purged,
      checks: { other_tab_stopped: capturedAfter === 0, other_tab_queue_empty: bQueued === 0, only_consent_flag_left: bKeys.join() === '__observer_consent' },
      notes: { purged: purged.length, storage_after_opt_out: bKeys },
    };
  });

  // 8. A page with a 50 KB URL: events carry it cut and redacted, and are delivered.
  await run('url_50kb', async () => {
    const context = await launch(newDir(), base);
    const page = await context.newPage();
    await page.goto(origin + '/auto?token=secret-token&q=jane+doe&pad=' + 'x'.repeat(50000));
    for (let i = 0; i < 5; i++) await page.click(`#list li:nth-child(${i * 100 + 1}) button`);
    await track(page, 'long_url', 3);
    await page.evaluate(() => window.obs.flush());
    await waitFor(async () => (await queued(page)) === 0, 20000, 'delivery');
    const urls = await page.evaluate(() => window.__captured.map((e) => e.url));
    const produced = await captured(page);
    await context.close();
    return { produced, checks: { urls_bounded: urls.every((u) => u.length <= 2001), urls_redacted: urls.every((u) => u.includes('token=[redacted]') && u.includes('q=[redacted]')) }, notes: { max_url_length: Math.max(...urls.map((u) => u.length)) } };
  });

  // 9. An error storm: 10,000 throwing timers and 1,000 rejections; deduplicated, rate-limited,
  //    and the first page_view still delivered.
  await run('error_storm', async () => {
    const context = await launch(newDir(), base);
    const page = await context.newPage();
    await page.goto(origin + '/auto');
    await page.evaluate(async () => {
      for (let i = 0; i < 10000; i++) setTimeout(() => { throw new Error('storm ' + (i % 20)); }, 0);
      for (let i = 0; i < 1000; i++) Promise.reject({ huge: 'x'.repeat(1000), i });
      await new Promise((r) => setTimeout(r, 500));
    });
    await page.evaluate(() => window.obs.flush());
    await waitFor(async () => (await queued(page)) === 0, 30000, 'delivery after the storm');
    const all = await page.evaluate(() => window.__captured);
    const stats = await page.evaluate(() => window.obs.stats());
    await context.close();
    const errors = all.filter((e) => e.type === 'error').length;
    return {
      produced: all.map((e) => e.id),
      page_view: all.find((e) => e.type === 'page_view')?.id,
      checks: { first_page_view_produced: all[0] && all[0].type === 'page_view', errors_bounded: errors <= 10 },
      notes: { error_events: errors, dropped: stats.dropped },
    };
  });

  // 10. The answer lost on unload: the hide's keepalive request reaches the server (202) but the
  //     page is gone before the answer; the session version is finalized; the next load resends
  //     the same frozen batch. The server must count each event once (DEDUP_WINDOW): this path
  //     depends on that server work, the others never deliver an event twice.
  await run('answer_lost_then_resent', async () => {
    const context = await launch(newDir(), base);
    const page = await context.newPage();
    await page.goto(origin + '/auto');
    await track(page, 'answer_lost', 6);
    const first = await captured(page);
    proxy.set('hold');
    const heldFrom = proxy.log.length;
    await closeAndWait(page);
    await sleep(7000); // past SESSION_IDLE_TIMEOUT=4 + the sweep: version 1 is finalized and forwarded
    proxy.set('pass');
    const next = await context.newPage();
    await next.goto(origin + '/auto');
    await next.evaluate(() => window.obs.flush());
    await waitFor(async () => (await queued(next)) === 0, 30000, 'the resend');
    const produced = first.concat(await captured(next));
    const resent = first.filter((id) => (proxy.delivered().get(id) || 0) > 1).length;
    // The unload send may go as a beacon (text/plain): a beacon has no answer to lose, the SDK
    // does not keep it, so nothing is resent and the server's dedup is not exercised in that run
    // (stored once and delivered once is still checked). A fetch whose answer was lost must be resent.
    const heldSends = proxy.log.slice(heldFrom).filter((r) => first.some((id) => r.ids.includes(id)));
    const beaconOnly = heldSends.length > 0 && heldSends.every((r) => r.plain);
    await context.close();
    return { produced, resend_expected: !beaconOnly, checks: { the_lost_answer_was_resent: resent >= 1 || beaconOnly },
      notes: { resent_after_lost_answer: resent, unload_send: beaconOnly ? 'beacon (no answer to lose)' : 'fetch' } };
  });

  // 11. Ten tabs through an outage: their queues together stay under 256 KB of localStorage
  //     (the oldest events beyond it dropped and counted), and the host page can still write
  //     4 MB of its own. Lossy by design: what is checked is delivered + counted drops = produced.
  await run('ten_tabs_quota', async () => {
    const context = await launch(newDir(), base);
    proxy.set('503');
    const tabs = [];
    for (let i = 0; i < 10; i++) {
      const p = await context.newPage();
      await p.goto(origin + '/auto');
      tabs.push(p);
    }
    for (const p of tabs) await p.evaluate(() => { for (let i = 0; i < 40; i++) window.obs.track('outage', { i, blob: 'z'.repeat(1500) }); });
    await sleep(2500);
    const used = await tabs[0].evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('__observer_q:')).reduce((n, k) => n + k.length + localStorage.getItem(k).length, 0));
    const host = await tabs[0].evaluate(() => {
      try {
        for (let i = 0; i < 4; i++) localStorage.setItem('host-data-' + i, 'h'.repeat(1024 * 1024));
        return true;
      } catch (e) {
        return String(e);
      } finally {
        for (let i = 0; i < 4; i++) localStorage.removeItem('host-data-' + i);
      }
    });
    proxy.set('pass');
    await Promise.all(tabs.map((p) => p.evaluate(() => window.obs.flush())));
    await waitFor(async () => (await Promise.all(tabs.map(queued))).every((n) => n === 0), 60000, 'all ten tabs drained');
    let produced = [];
    let dropped = 0;
    for (const p of tabs) {
      produced = produced.concat(await captured(p));
      dropped += await p.evaluate(() => Object.values(window.obs.stats().dropped).reduce((a, b) => a + b, 0));
    }
    await context.close();
    const got = proxy.delivered();
    const delivered = produced.filter((id) => got.has(id));
    return {
      produced: delivered,
      produced_in_all: produced.length,
      checks: { store_under_256kb: used <= 256 * 1024, host_wrote_4mb: host === true, every_loss_counted: delivered.length + dropped === produced.length },
      notes: { queue_chars_in_localStorage: used, counted_drops: dropped, produced_in_all: produced.length },
    };
  });

  await proxy.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  return reports;
}
