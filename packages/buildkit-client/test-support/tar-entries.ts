// Minimal tar reader for tests: ustar, PAX ('x'/'g') and GNU long names ('L'/'K').
// File contents stream through sha256 and are never held in memory.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarEntry {
  /** Archive path without leading "./" or "/" and without trailing "/"; "." for the root. */
  name: string;
  type: TarEntryType;
  /** Permission bits, including setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  /** Symlink target as stored, or hardlink target normalized like `name`; "" otherwise. */
  linkname: string;
  size: number;
  /** Hex sha256 of the entry's data (of nothing for entries other than files). */
  sha256: string;
  /** Seconds since the epoch; fractional when a PAX header says so. */
  mtime: number;
  /** `SCHILY.xattr.<name>` records, as `name=value` (values read as UTF-8), sorted. */
  xattrs: string[];
}

const BLOCK = 512;
// PAX and GNU long-name payloads are buffered; anything bigger is not a real header.
const MAX_META_SIZE = 1 << 20;

const ENTRY_TYPES: Readonly<Record<string, TarEntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

type MetaFlag = 'x' | 'g' | 'L' | 'K';

function isMetaFlag(flag: string): flag is MetaFlag {
  return flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K';
}

type Pending =
  | { kind: 'file'; entry: TarEntry; hash: Hash }
  | { kind: 'meta'; flag: MetaFlag; chunks: Buffer[] };

function normalizeName(name: string): string {
  const trimmed = name.replace(/^(?:\.?\/)+/, '').replace(/\/+$/, '');
  return trimmed === '' ? '.' : trimmed;
}

/** A NUL-terminated string field. */
function readString(block: Buffer, offset: number, length: number): string {
  const end = block.indexOf(0, offset);
  return block.toString('utf8', offset, end === -1 || end > offset + length ? offset + length : end);
}

/** A numeric field: octal text, or big-endian base-256 when the high bit is set (GNU). */
function readNumber(block: Buffer, offset: number, length: number): number {
  const first = block.readUInt8(offset);
  if (first & 0x80) {
    if (first === 0xff) throw new Error('negative base-256 number in tar header');
    let value = first & 0x7f;
    for (let i = offset + 1; i < offset + length; i++) value = value * 256 + block.readUInt8(i);
    return value;
  }
  const field = block.toString('latin1', offset, offset + length);
  const nul = field.indexOf('\0');
  const text = (nul === -1 ? field : field.slice(0, nul)).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new Error(`bad octal field in tar header: ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

function verifyChecksum(block: Buffer): void {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block.readUInt8(i);
  const stored = readNumber(block, 148, 8);
  if (stored !== sum) throw new Error(`tar header checksum mismatch (stored ${stored}, computed ${sum})`);
}

/** PAX records: "<length> <key>=<value>\n", where length counts the whole record. */
function parsePax(data: Buffer, into: Map<string, string>): void {
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    const length = space === -1 ? Number.NaN : Number(data.toString('latin1', offset, space));
    if (!Number.isInteger(length) || length <= 0 || offset + length > data.length) {
      throw new Error('malformed PAX record');
    }
    const record = data.toString('utf8', space + 1, offset + length - 1);
    const eq = record.indexOf('=');
    if (eq === -1) throw new Error(`malformed PAX record: ${JSON.stringify(record)}`);
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    // An empty value removes the key (POSIX).
    if (value === '') into.delete(key);
    else into.set(key, value);
    offset += length;
  }
}

class TarParser {
  readonly entries: TarEntry[] = [];
  done = false;
  readonly #header = Buffer.alloc(BLOCK);
  #headerFill = 0;
  #pending: Pending | undefined;
  #dataLeft = 0;
  #paddingLeft = 0;
  readonly #globalPax = new Map<string, string>();
  #pax = new Map<string, string>();
  #longName: string | undefined;
  #longLink: string | undefined;

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.done) {
      if (this.#dataLeft > 0) {
        const n = Math.min(this.#dataLeft, chunk.length - offset);
        this.#consume(chunk.subarray(offset, offset + n));
        offset += n;
        this.#dataLeft -= n;
        if (this.#dataLeft === 0) this.#finish();
      } else if (this.#paddingLeft > 0) {
        const n = Math.min(this.#paddingLeft, chunk.length - offset);
        offset += n;
        this.#paddingLeft -= n;
      } else {
        const n = Math.min(BLOCK - this.#headerFill, chunk.length - offset);
        chunk.copy(this.#header, this.#headerFill, offset, offset + n);
        this.#headerFill += n;
        offset += n;
        if (this.#headerFill === BLOCK) {
          this.#headerFill = 0;
          this.#readHeader(this.#header);
        }
      }
    }
  }

  /** Archives cut at an entry boundary are accepted, like GNU tar does (with a warning). */
  end(): void {
    if (this.done) return;
    if (this.#dataLeft > 0 || this.#paddingLeft > 0 || this.#headerFill > 0) {
      throw new Error('truncated tar archive');
    }
    if (this.#pax.size > 0 || this.#longName !== undefined || this.#longLink !== undefined) {
      throw new Error('tar archive ends after an extended header');
    }
  }

  #consume(data: Buffer): void {
    const pending = this.#pending;
    if (pending?.kind === 'file') pending.hash.update(data);
    // Copied: the stream may reuse its chunk's memory.
    else pending?.chunks.push(Buffer.from(data));
  }

  #finish(): void {
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending === undefined) return;
    if (pending.kind === 'file') {
      pending.entry.sha256 = pending.hash.digest('hex');
      this.entries.push(pending.entry);
      return;
    }
    const data = Buffer.concat(pending.chunks);
    switch (pending.flag) {
      case 'x':
        parsePax(data, this.#pax);
        break;
      case 'g':
        parsePax(data, this.#globalPax);
        break;
      case 'L':
        this.#longName = data.toString('utf8').replace(/\0+$/, '');
        break;
      case 'K':
        this.#longLink = data.toString('utf8').replace(/\0+$/, '');
        break;
    }
  }

  #readHeader(block: Buffer): void {
    if (block.every((byte) => byte === 0)) {
      this.done = true;
      return;
    }
    verifyChecksum(block);
    const flag = block.toString('latin1', 156, 157);
    const headerSize = readNumber(block, 124, 12);
    if (isMetaFlag(flag)) {
      if (headerSize > MAX_META_SIZE) throw new Error(`tar extended header of ${headerSize} bytes`);
      this.#startData({ kind: 'meta', flag, chunks: [] }, headerSize);
      return;
    }
    const pax = new Map([...this.#globalPax, ...this.#pax]);
    const paxNumber = (key: string, fallback: number): number => {
      const value = pax.get(key);
      return value === undefined ? fallback : Number(value);
    };
    const size = paxNumber('size', headerSize);
    const type = ENTRY_TYPES[flag];
    if (type === undefined) throw new Error(`unsupported tar entry type ${JSON.stringify(flag)}`);

    let name = readString(block, 0, 100);
    // Only POSIX ustar has a prefix field; GNU uses those bytes for other things.
    if (block.toString('latin1', 257, 263) === 'ustar\0') {
      const prefix = readString(block, 345, 155);
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    name = pax.get('path') ?? this.#longName ?? name;
    let linkname = pax.get('linkpath') ?? this.#longLink ?? readString(block, 157, 100);
    if (type === 'hardlink') linkname = normalizeName(linkname);
    this.#pax = new Map();
    this.#longName = undefined;
    this.#longLink = undefined;

    const entry: TarEntry = {
      name: normalizeName(name),
      type,
      mode: readNumber(block, 100, 8) & 0o7777,
      uid: paxNumber('uid', readNumber(block, 108, 8)),
      gid: paxNumber('gid', readNumber(block, 116, 8)),
      linkname,
      size,
      sha256: '',
      mtime: paxNumber('mtime', readNumber(block, 136, 12)),
      xattrs: [...pax]
        .filter(([key]) => key.startsWith('SCHILY.xattr.'))
        .map(([key, value]) => `${key.slice('SCHILY.xattr.'.length)}=${value}`)
        .sort(),
    };
    // Only regular files carry data blocks; other types may state a size but have none.
    this.#startData({ kind: 'file', entry, hash: createHash('sha256') }, type === 'file' ? size : 0);
  }

  #startData(pending: Pending, size: number): void {
    this.#pending = pending;
    this.#dataLeft = size;
    this.#paddingLeft = (BLOCK - (size % BLOCK)) % BLOCK;
    if (size === 0) this.#finish();
  }
}

/** Lists a tar archive (a file path or its bytes) in archive order. */
export async function readTarEntries(fileOrBuffer: string | Uint8Array): Promise<TarEntry[]> {
  const parser = new TarParser();
  if (typeof fileOrBuffer === 'string') {
    for await (const chunk of createReadStream(fileOrBuffer)) {
      parser.push(chunk as Buffer);
      if (parser.done) break;
    }
  } else {
    parser.push(Buffer.from(fileOrBuffer.buffer, fileOrBuffer.byteOffset, fileOrBuffer.byteLength));
  }
  parser.end();
  return parser.entries;
}

export interface CompareTarOptions {
  /** Also compare mtimes (whole seconds). Off by default: exporters disagree on them. */
  compareMtime?: boolean;
  /** With compareMtime, still skip directories, whose mtime moves as children are added. Default true. */
  ignoreDirMtime?: boolean;
}

function indexByName(entries: readonly TarEntry[], label: string, diffs: string[]): Map<string, TarEntry> {
  const byName = new Map<string, TarEntry>();
  for (const entry of entries) {
    if (byName.has(entry.name)) diffs.push(`${entry.name}: appears more than once in ${label}`);
    else byName.set(entry.name, entry);
  }
  return byName;
}

const octal = (mode: number): string => `0${mode.toString(8).padStart(3, '0')}`;

/** Differences between two listings as readable lines; empty when they match. */
export function compareTarEntries(
  a: readonly TarEntry[],
  b: readonly TarEntry[],
  { compareMtime = false, ignoreDirMtime = true }: CompareTarOptions = {},
): string[] {
  const diffs: string[] = [];
  const inA = indexByName(a, 'a', diffs);
  const inB = indexByName(b, 'b', diffs);
  for (const name of inA.keys()) if (!inB.has(name)) diffs.push(`${name}: only in a`);
  for (const name of inB.keys()) if (!inA.has(name)) diffs.push(`${name}: only in b`);

  const orderA = [...inA.keys()].filter((name) => inB.has(name));
  const orderB = [...inB.keys()].filter((name) => inA.has(name));
  const firstOutOfOrder = orderA.findIndex((name, i) => name !== orderB[i]);
  if (firstOutOfOrder !== -1) {
    diffs.push(
      `order differs from position ${firstOutOfOrder}: a has ${orderA[firstOutOfOrder]}, b has ${orderB[firstOutOfOrder]}`,
    );
  }

  for (const [name, x] of inA) {
    const y = inB.get(name);
    if (y === undefined) continue;
    const field = (what: string, p: string | number, q: string | number): void => {
      if (p !== q) diffs.push(`${name}: ${what} ${p} != ${q}`);
    };
    field('type', x.type, y.type);
    field('mode', octal(x.mode), octal(y.mode));
    field('uid', x.uid, y.uid);
    field('gid', x.gid, y.gid);
    field('linkname', x.linkname, y.linkname);
    field('size', x.size, y.size);
    field('sha256', x.sha256, y.sha256);
    field('xattrs', x.xattrs.join(' '), y.xattrs.join(' '));
    if (compareMtime && !(ignoreDirMtime && x.type === 'dir' && y.type === 'dir')) {
      field('mtime', Math.trunc(x.mtime), Math.trunc(y.mtime));
    }
  }
  return diffs;
}
