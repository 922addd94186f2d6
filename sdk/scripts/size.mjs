// Prints the minified and minified+gzipped sizes of the <script> builds; fails if the core is over 10 KiB.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const dist = join(dirname(fileURLToPath(import.meta.url)), '../dist');
export const LIMIT = 10240;
let over = false;
for (const [name, limit] of [['observer.min.js', LIMIT], ['observer.full.min.js', 0], ['observer.esm.js', 0], ['cjs/index.js', 0]]) {
  const src = readFileSync(join(dist, name));
  const gz = gzipSync(src, { level: 9 }).length;
  console.log(`dist/${name}: ${src.length} bytes${name.includes('min') ? ' minified' : ''}, ${gz} bytes gzipped${limit ? ` (limit ${limit})` : ''}`);
  if (limit && gz > limit) over = true;
}
if (over) {
  console.error(`core build over the ${LIMIT}-byte budget`);
  process.exit(1);
}
