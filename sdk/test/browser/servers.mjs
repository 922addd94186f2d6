// The test's local servers: the page server (the page's origin) and a tiny fake ingest API.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LISTENER_COUNTER, OTHER_WRAPPER, autoPage, snippetPage, testPage } from './pages.mjs';

const DIST = join(dirname(fileURLToPath(import.meta.url)), '../../dist');

const listen = (server, port = 0) =>
  new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });

/** A port nothing listens on: a request to it fails with a network error. */
export async function closedPort() {
  const s = http.createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

/** Serves the test page, the SDK builds, /ok.json (200) and a 404 for anything else. */
export async function startPageServer({ port = 0, build = 'min' } = {}) {
  // Room for the 50 KB URL of the long-URL path (Node's default is 16 KB of headers).
  const server = http.createServer({ maxHeaderSize: 256 * 1024 }, (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const send = (status, type, body) => {
      res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (path === '/' || path === '/index.html' || path === '/next') return send(200, 'text/html', testPage({ build, withCounter: false }));
    if (path === '/full') return send(200, 'text/html', testPage({ build: 'full', withCounter: false }));
    if (path === '/auto') return send(200, 'text/html', autoPage(build));
    if (path === '/snippet') return send(200, 'text/html', snippetPage(build));
    if (path === '/counted.html') return send(200, 'text/html', testPage({ build, withCounter: true }));
    if (path === '/observer.min.js' || path === '/observer.full.min.js') return send(200, 'application/javascript', readFileSync(join(DIST, path.slice(1))));
    if (path === '/listener-count.js') return send(200, 'application/javascript', LISTENER_COUNTER);
    if (path === '/other-wrapper.js') return send(200, 'application/javascript', OTHER_WRAPPER);
    if (path === '/ok.json') return send(200, 'application/json', JSON.stringify({ ok: true, answer: 42 }));
    return send(404, 'text/plain', 'not found');
  });
  const p = await listen(server, port);
  return { server, origin: `http://127.0.0.1:${p}`, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

const TYPES = new Set(['page_view', 'click', 'rage_click', 'error', 'network', 'navigation', 'web_vital', 'custom']);

const REASON = /^[a-z][a-z0-9_]{0,31}$/;

/** The server's bounds on a client report (app/web/ingest.py): else it is ignored. */
const validReport = (r) =>
  !!r && typeof r.id === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(r.id) && !!r.dropped && typeof r.dropped === 'object' &&
  Object.keys(r.dropped).length >= 1 && Object.keys(r.dropped).length <= 16 &&
  Object.entries(r.dropped).every(([k, v]) => REASON.test(k) && Number.isInteger(v) && v >= 1 && v <= 1000000);

/** A minimal stand-in for the ingest API (only for developing the SDK without the pipeline). */
export async function startFakeIngest(apiKey) {
  const received = []; // { t, status, contentType, events, raw }
  const reports = new Map(); // client report id -> dropped, counted once
  const start = Date.now();
  const server = http.createServer((req, res) => {
    const origin = req.headers.origin || '*';
    const cors = {
      'Access-Control-Allow-Origin': origin,
      'Access-Control-Allow-Credentials': 'true',
      'Access-Control-Expose-Headers': 'Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-ID',
      Vary: 'Origin',
    };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Allow-Headers': 'Content-Type, Authorization, X-Request-ID, X-API-Key', 'Access-Control-Max-Age': '600' });
      return res.end();
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const contentType = String(req.headers['content-type'] || '');
      const answer = (status, body) => {
        received.push({ t: Date.now() - start, status, contentType, events: (parsed && parsed.events) || [], raw, requestId: req.headers['x-request-id'] || null });
        res.writeHead(status, {
          ...cors,
          'Content-Type': 'application/json',
          'X-RateLimit-Limit': '1000',
          'X-RateLimit-Remaining': '999',
          'X-RateLimit-Reset': String(Math.ceil(Date.now() / 1000) + 60),
        });
        res.end(JSON.stringify(body));
      };
      let parsed = null;
      if (req.method !== 'POST' || new URL(req.url, 'http://x').pathname !== '/v1/events') return answer(404, { error: { code: 'not_found' } });
      try {
        parsed = JSON.parse(raw);
      } catch {
        return answer(400, { error: { code: 'bad_json' } });
      }
      const auth = String(req.headers.authorization || '');
      const key = auth.startsWith('Bearer ') ? auth.slice(7) : parsed.api_key;
      if (key !== apiKey) return answer(401, { error: { code: 'unauthorized' } });
      const events = Array.isArray(parsed.events) ? parsed.events : [];
      const rejected = [];
      events.forEach((e, index) => {
        const ok = e && typeof e.event_id === 'string' && TYPES.has(e.type) && Number.isInteger(e.timestamp) && typeof e.session_id === 'string' && typeof e.url === 'string' && e.metadata && typeof e.metadata === 'object' && (e.type !== 'custom' || e.name);
        if (!ok) rejected.push({ index, code: 'invalid', errors: {} });
      });
      if (events.length && rejected.length === events.length) {
        return answer(400, { error: { code: 'no_acceptable_events', message: 'no event was acceptable', request_id: 'fake', details: rejected } });
      }
      const body = { accepted: events.length - rejected.length, rejected, request_id: 'fake-' + received.length };
      // Client reports: counted once per id (a resend after a lost answer is a duplicate).
      const r = parsed.client_report;
      if (r !== undefined) body.client_report = !validReport(r) ? 'ignored' : reports.has(r.id) ? 'duplicate' : (reports.set(r.id, { ...r.dropped }), 'counted');
      answer(202, body);
    });
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    eventIds: () => new Set(received.filter((r) => r.status === 202).flatMap((r) => r.events.map((e) => e.event_id))),
    /** The drops counted from client reports, by reason (each report id once). */
    reportTotals: () => {
      const t = {};
      for (const d of reports.values()) for (const [k, v] of Object.entries(d)) t[k] = (t[k] || 0) + v;
      return t;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * A proxy in front of the real ingest API that the test switches between passing requests
 * through, answering 503 (with CORS, so the page can read it) and 'hold' (forwarding, but
 * never answering the page). Logs each POST's event ids
 * and the status the page got.
 */
export async function startFaultProxy(target) {
  const to = new URL(target);
  const log = []; // { t, status, ids, plain }
  const state = { mode: 'pass' };
  const held = [];
  const start = Date.now();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let ids = [];
      try {
        ids = (JSON.parse(body.toString('utf8')).events || []).map((e) => e.event_id);
      } catch { /* not JSON: a preflight or junk */ }
      const rec = req.method === 'POST' ? { t: Date.now() - start, status: null, ids, plain: String(req.headers['content-type'] || '').startsWith('text/plain') } : null;
      if (rec) log.push(rec);
      if (state.mode === '503') {
        const origin = req.headers.origin || '*';
        const cors = { 'Access-Control-Allow-Origin': origin, 'Access-Control-Allow-Headers': 'Content-Type, Authorization, X-Request-ID', 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Expose-Headers': 'Retry-After', Vary: 'Origin' };
        if (rec) rec.status = 503;
        res.writeHead(req.method === 'OPTIONS' ? 204 : 503, { ...cors, 'Content-Type': 'application/json', 'Retry-After': '1' });
        return res.end(req.method === 'OPTIONS' ? '' : '{"error":{"code":"unavailable","message":"fault injected by the test","request_id":"test"}}');
      }
      const hold = state.mode === 'hold' && req.method === 'POST';
      const up = http.request({ host: to.hostname, port: to.port, path: req.url, method: req.method, headers: { ...req.headers, host: to.host } }, (r) => {
        if (rec) rec.status = r.statusCode;
        // 'hold': the server got the batch and answered, but the page never hears it (it unloads first).
        if (hold) return void (r.resume(), held.push(res));
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => {
        if (rec) rec.status = 0;
        res.destroy();
      });
      up.end(body);
    });
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    set: (mode) => void (state.mode = mode),
    /** How many 2xx answers carried each event id. */
    delivered: () => {
      const n = new Map();
      for (const r of log) if (r.status >= 200 && r.status < 300) for (const id of r.ids) n.set(id, (n.get(id) || 0) + 1);
      return n;
    },
    close: () => new Promise((r) => { held.forEach((x) => x.destroy()); server.closeAllConnections(); server.close(r); }),
  };
}
