// Bundles each test/unit/*.test.ts with esbuild into a temp dir, then runs node's test runner on them.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'test/unit');
const tests = readdirSync(dir).filter((f) => /\.test\.(ts|mjs)$/.test(f));
// Inside node_modules, so the bundles resolve external packages (happy-dom) from there.
const out = mkdtempSync(join(root, 'node_modules', '.observer-unit-'));
try {
  await build({
    entryPoints: tests.map((f) => join(dir, f)),
    outdir: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outExtension: { '.js': '.mjs' },
    packages: 'external',
    logLevel: 'warning',
  });
  const files = readdirSync(out).filter((f) => f.endsWith('.mjs')).map((f) => join(out, f));
  const r = spawnSync(process.execPath, ['--test', ...process.argv.slice(2), ...files], { stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(out, { recursive: true, force: true });
}
