// Writes src/rules.ts from app/ingest/privacy_rules.json (the server's rules file), leaving
// out its test vectors: the SDK and the server scrub by the same rules. `--check` exits 1
// when src/rules.ts is stale instead of rewriting it.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rulesSource } from './rules-source.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const RULES_PATH = join(root, '../app/ingest/privacy_rules.json');
const OUT = join(root, 'src/rules.ts');

const src = rulesSource(JSON.parse(readFileSync(RULES_PATH, 'utf8')));
if (process.argv.includes('--check')) {
  if (readFileSync(OUT, 'utf8') !== src) {
    console.error('src/rules.ts is stale: run node scripts/gen-rules.mjs');
    process.exit(1);
  }
} else writeFileSync(OUT, src);
