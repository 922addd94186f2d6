import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import rules from '../../../app/ingest/privacy_rules.json' with { type: 'json' };
import { rulesSource } from '../../scripts/rules-source.mjs';

test('src/rules.ts is generated from app/ingest/privacy_rules.json (the server reads the same file)', () => {
  const here = new URL('src/rules.ts', `file://${process.cwd()}/`); // npm test runs in sdk/
  assert.equal(readFileSync(here, 'utf8'), rulesSource(rules));
});
