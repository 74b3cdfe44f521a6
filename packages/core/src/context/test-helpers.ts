/**
 * Test support: a small tar *writer* that can also write the broken and hostile archives the context
 * tests need (bad checksums, devices, traversal names, huge PAX headers, non-UTF-8 names, ...),
 * plus stream helpers. Not used by production code.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { AppError, type ErrorCode } from '../errors.js';

export interface EntrySpec {
  /** Written as given (a Buffer for non-UTF-8 names); names over 100 bytes go to a PAX or GNU record. */
  name: string | Buffer;
  /** Tar type flag: '0' file (default), '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, ... */
  type?: string;
  data?: Buffer | string;
  /** Declared size; default the data length (a different value makes a truncated/odd entry). */
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string | Buffer;
  /** 'ustar' (POSIX, default), 'gnu' or 'v7' magic. */
  format?: 'ustar' | 'gnu' | 'v7';
  /** How a name/linkname over 100 bytes is written: PAX 'x' record (default) or GNU 'L'/'K'. */
  long?: 'pax' | 'gnu';
  /** Extra PAX records for this entry (emitted in an 'x' header before it). */
  pax?: Record<string, string | Buffer>;
  /** Add this to the stored checksum (to corrupt it). */
  checksumDelta?: number;
}

const BLOCK = 512;

function writeString(block: Buffer, offset: number, length: number, value: string | Buffer): void {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  if (bytes.length > length) throw new Error(`field too long: ${bytes.length} > ${length}`);
  bytes.copy(block, offset);
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  writeString(block, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

/** One 512-byte header block. */
export function header(spec: EntrySpec & { size: number }): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, 0, 100, spec.name);
  writeOctal(block, 100, 8, spec.mode ?? (spec.type === '5' ? 0o755 : 0o644));
  writeOctal(block, 108, 8, spec.uid ?? 0);
  writeOctal(block, 116, 8, spec.gid ?? 0);
  writeOctal(block, 124, 12, spec.size);
  writeOctal(block, 136, 12, spec.mtime ?? 1_700_000_000);
  block.write('        ', 148, 'latin1');
  block.write(spec.type ?? '0', 156, 'latin1');
  if (spec.linkname !== undefined) writeString(block, 157, 100, spec.linkname);
  const format = spec.format ?? 'ustar';
  if (format === 'ustar') block.write('ustar\u000000', 257, 'latin1');
  if (format === 'gnu') block.write('ustar  \u0000', 257, 'latin1');
  let sum = 0;
  for (const b of block) sum += b;
  writeString(block, 148, 8, `${(sum + (spec.checksumDelta ?? 0)).toString(8).padStart(6, '0')}\0 `);
  return block;
}

function pad(length: number): Buffer {
  return Buffer.alloc((BLOCK - (length % BLOCK)) % BLOCK);
}

/** PAX record data: `<len> key=value\n` with the self-including length. */
export function paxData(records: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, raw] of Object.entries(records)) {
    const value = typeof raw === 'string' ? Buffer.from(raw) : raw;
    const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    parts.push(Buffer.concat([Buffer.from(String(length)), body]));
  }
  return Buffer.concat(parts);
}

/** A meta entry ('x', 'g', 'L', 'K') with its data. */
export function metaEntry(type: 'x' | 'g' | 'L' | 'K', data: Buffer, name = 'PaxHeader'): Buffer {
  const entryName = type === 'L' || type === 'K' ? '././@LongLink' : name;
  return Buffer.concat([header({ name: entryName, type, size: data.length }), data, pad(data.length)]);
}

/** Header(s) + data + padding for one entry. */
export function entry(spec: EntrySpec): Buffer {
  const data = spec.data === undefined ? Buffer.alloc(0) : Buffer.from(spec.data);
  const parts: Buffer[] = [];
  const pax: Record<string, string | Buffer> = { ...spec.pax };
  let name = spec.name;
  let linkname = spec.linkname;
  const nameLength = Buffer.byteLength(name);
  if (nameLength > 100) {
    if (spec.long === 'gnu') parts.push(metaEntry('L', Buffer.concat([Buffer.from(name), Buffer.alloc(1)])));
    else pax.path = name;
    name = `long-name-${nameLength}`;
  }
  if (linkname !== undefined && Buffer.byteLength(linkname) > 100) {
    if (spec.long === 'gnu')
      parts.push(metaEntry('K', Buffer.concat([Buffer.from(linkname), Buffer.alloc(1)])));
    else pax.linkpath = linkname;
    linkname = 'long-link';
  }
  if (Object.keys(pax).length > 0) parts.push(metaEntry('x', paxData(pax)));
  parts.push(header({ ...spec, name, linkname, size: spec.size ?? data.length }), data, pad(data.length));
  return Buffer.concat(parts);
}

/** A whole archive: entries, then (unless `end: false`) the two zero blocks. */
export function tar(entries: (EntrySpec | Buffer)[], options: { end?: boolean } = {}): Buffer {
  const parts = entries.map((e) => (Buffer.isBuffer(e) ? e : entry(e)));
  if (options.end !== false) parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

export const file = (
  name: string | Buffer,
  data: string | Buffer = '',
  extra: Partial<EntrySpec> = {},
): EntrySpec => ({
  name,
  data,
  ...extra,
});
export const dir = (name: string, extra: Partial<EntrySpec> = {}): EntrySpec => ({
  name,
  type: '5',
  ...extra,
});
export const symlink = (
  name: string,
  target: string | Buffer,
  extra: Partial<EntrySpec> = {},
): EntrySpec => ({
  name,
  type: '2',
  linkname: target,
  ...extra,
});
export const hardlink = (name: string, target: string, extra: Partial<EntrySpec> = {}): EntrySpec => ({
  name,
  type: '1',
  linkname: target,
  ...extra,
});
export const DOCKERFILE = file('Dockerfile', 'FROM scratch\nCOPY . /\n');

/** A readable that yields `buffer` in `chunkSize` pieces (like a socket would). */
export function chunked(buffer: Buffer, chunkSize = 64 * 1024): Readable {
  let pos = 0;
  return new Readable({
    read() {
      if (pos >= buffer.length) {
        this.push(null);
        return;
      }
      this.push(buffer.subarray(pos, pos + chunkSize));
      pos += chunkSize;
    },
  });
}

/** Asserts that `promise` rejects with an AppError of `code` whose message matches every pattern. */
export async function assertAppError(
  promise: Promise<unknown>,
  code: ErrorCode,
  ...patterns: RegExp[]
): Promise<AppError> {
  let error: unknown;
  try {
    await promise;
  } catch (err) {
    error = err;
  }
  assert.ok(
    error instanceof AppError,
    `expected an AppError(${code}), got ${error === undefined ? 'success' : String(error)}`,
  );
  assert.equal(error.code, code, `code of: ${error.message}`);
  for (const pattern of patterns) assert.match(error.message, pattern);
  return error;
}
