/** The text of src/rules.ts for the shared rules object (app/ingest/privacy_rules.json). */
export function rulesSource(rules: unknown): string;
