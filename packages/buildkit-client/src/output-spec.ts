import { InvalidArgumentError } from './errors.js';

/**
 * Parses buildctl/docker `--output` CSV (`type=tar,dest=app.tar`). Values may be quoted
 * CSV-style when they contain commas.
 */
export function parseCsvAttrs(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const field of splitCsv(spec)) {
    const eq = field.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`invalid field "${field}" in "${spec}": expected key=value`);
    out[field.slice(0, eq).trim().toLowerCase()] = field.slice(eq + 1);
  }
  return out;
}

function splitCsv(s: string): string[] {
  const fields: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (c === '"') {
      if (quoted && s[i + 1] === '"') {
        cur += '"';
        i++;
      } else quoted = !quoted;
    } else if (c === ',' && !quoted) {
      fields.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new InvalidArgumentError(`unterminated quote in "${s}"`);
  fields.push(cur);
  return fields.filter((f) => f.length > 0);
}
