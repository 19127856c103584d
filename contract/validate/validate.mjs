// Validates an AsyncAPI document with the official parser; exits non-zero on any
// error-severity diagnostic. Usage: node validate.mjs ../../asyncapi/asyncapi.yaml
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, 'utf8'));
const names = ['error', 'warning', 'info', 'hint'];
for (const d of diagnostics) {
  console.log(`${names[d.severity] ?? d.severity}: ${d.code}: ${d.message} at ${d.path.join('/')}`);
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
const warnings = diagnostics.filter((d) => d.severity === 1).length;
if (!document || errors > 0) {
  console.error(`asyncapi: ${path} has ${errors} error(s)`);
  process.exit(1);
}
console.log(`asyncapi: ${path} is valid AsyncAPI ${document.version()} (${errors} errors, ${warnings} warnings)`);
