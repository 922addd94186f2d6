// Builds dist/: the ESM module, the minified <script> (IIFE) build and the type declarations.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const common = { bundle: true, target: ['es2018'], legalComments: 'none', logLevel: 'warning' };

rmSync(join(root, 'dist'), { recursive: true, force: true });
// ESM: core + web vitals (bundlers tree-shake what they can; size matters less there).
await build({ ...common, entryPoints: [join(root, 'src/full.ts')], format: 'esm', outfile: join(root, 'dist/observer.esm.js') });
// <script> builds: the core (<= 8 KiB gzipped) and the core with web vitals.
await build({ ...common, entryPoints: [join(root, 'src/global.ts')], format: 'iife', minify: true, outfile: join(root, 'dist/observer.min.js') });
await build({ ...common, entryPoints: [join(root, 'src/global-full.ts')], format: 'iife', minify: true, outfile: join(root, 'dist/observer.full.min.js') });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json'), '--emitDeclarationOnly'], { stdio: 'inherit' });
console.log('built dist/observer.esm.js, dist/observer.min.js, dist/observer.full.min.js, dist/index.d.ts');
