import type { Metadata } from '../grpc/metadata.js';

/**
 * Reads a repeated string option from a FileSync/FileSend call's metadata. Node joins repeated
 * headers with ", "; newer daemons URL-encode each value and set `<key>-encoded: 1`, which
 * makes the split unambiguous. Old daemons send raw values: split on ", " as the best guess.
 */
export function readRepeated(md: Metadata, key: string): string[] {
  const encoded = md.get(`${key}-encoded`).some((v) => ['1', 'true'].includes(String(v).toLowerCase()));
  const out: string[] = [];
  for (const raw of md.get(key)) {
    const joined = String(raw);
    if (joined.length === 0) continue;
    for (const part of joined.split(encoded ? ',' : ', ')) {
      const value = encoded ? decodeQueryComponent(part.trim()) : part;
      if (value.length > 0) out.push(value);
    }
  }
  return out;
}

export function readSingle(md: Metadata, key: string): string | undefined {
  return readRepeated(md, key)[0];
}

/** Inverse of Go's url.QueryEscape. */
function decodeQueryComponent(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}
