// Builds dist/: the ES module, the CommonJS module, the minified <script> (IIFE) builds and
// the type declarations (dist/*.d.ts for import, dist/cjs/*.d.ts for require).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const common = { bundle: true, target: ['es2020'], legalComments: 'none', logLevel: 'warning' };
// Internal member names shortened in the core <script> build (its 10 KiB budget): none is
// public API, read across builds (`cfg`, `options`), a persisted field or a DOM name.
const INTERNAL = ['blockedUntil', 'keepaliveBytes', 'attemptBatch', 'mayAttempt', 'scheduleSave', 'saveNow', 'hideHooks', 'adoptTimer',
  'saveTimer', 'hiddenAt', 'adoptSoon', 'onShutdown', 'onStorage', 'dispatcher', 'outbox', 'lastClick', 'vitalsAsked', 'ingestUrl',
  'running', 'dead', 'restored', 'adoptOrphans', 'allowance', 'unclaim', 'owned', 'purgeAll', 'batches', 'loose', 'shrink', 'absorb',
  'flushOnHide', 'budget', 'breaker', 'timers', 'retryIn', 'canRetry', 'recordRetry', 'recordSend', 'waitMs', 'failures', 'openedAt',
  'cooldown', 'probing', 'baseCooldown', 'maxCooldown', 'threshold', 'sends', 'prune', 'undo', 'listen', 'patch', 'onChange', 'newId',
  'rules', 'idleTimeout', 'maxDuration', 'expired', 'forget', 'adopt', 'report', 'life', 'kv', 'anon', 'ctx', 'store', 'session',
  'attempt', 'timer', 'stopped', 'pump', 'answer', 'schedule', 'clearTimer', 'notify', 'safe', 'emit', 'hide',
  'interval', 'busy', 'items', 'due', 'cached', 'retryAfter', 'rateWait', 'onHide', 'claim', 'transport', 'online', 'save', 'rng', 'expire', 'ratio',
  'reserve', 'windowMs', 'allow', 'success', 'failure', 'touch', 'peek', 'write', 'onError', 'bytes', 'unlock', 'retried',
  'vitals', 'storageListener', 'pending', 'offline', 'verdicts'];
const mangleProps = new RegExp('^(' + INTERNAL.join('|') + ')$');

execFileSync(process.execPath, [join(root, 'scripts/gen-rules.mjs')], { stdio: 'inherit' });
rmSync(dist, { recursive: true, force: true });
// Modules: core + web vitals (bundlers tree-shake what they can; size matters less there).
await build({ ...common, entryPoints: [join(root, 'src/full.ts')], format: 'esm', outfile: join(dist, 'observer.esm.js') });
await build({ ...common, entryPoints: [join(root, 'src/full.ts')], format: 'cjs', outfile: join(dist, 'cjs/index.js') });
// <script> builds: the core (<= 10 KiB gzipped) and the core with web vitals.
await build({ ...common, entryPoints: [join(root, 'src/global.ts')], format: 'iife', minify: true, mangleProps, outfile: join(dist, 'observer.min.js') });
await build({ ...common, entryPoints: [join(root, 'src/global-full.ts')], format: 'iife', minify: true, outfile: join(dist, 'observer.full.min.js') });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json'), '--emitDeclarationOnly'], { stdio: 'inherit' });
// The same declarations under a CommonJS scope, so `require` gets CJS-flavoured types.
writeFileSync(join(dist, 'cjs/package.json'), '{"type":"commonjs"}\n');
const copyDts = (from, to) => {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from, { withFileTypes: true })) {
    if (f.isDirectory() && f.name !== 'cjs') copyDts(join(from, f.name), join(to, f.name));
    else if (f.name.endsWith('.d.ts')) cpSync(join(from, f.name), join(to, f.name));
  }
};
copyDts(dist, join(dist, 'cjs'));
// The <script> builds are valid CommonJS too: copies in the CJS scope serve `require` and `import`.
for (const f of ['observer.min.js', 'observer.full.min.js']) cpSync(join(dist, f), join(dist, 'cjs', f));
console.log('built dist/observer.esm.js, dist/cjs/index.js, dist/observer.min.js, dist/observer.full.min.js, dist/index.d.ts, dist/cjs/index.d.ts');
