/**
 * A small tar writer: ustar headers, with PAX extended headers ('x') only for what ustar cannot
 * hold (long or non-ASCII names and link targets, sizes of 8 GiB and more, big ids, sub-second or
 * out-of-range mtimes). The same choices as Go's archive/tar with `Format: FormatPAX`, which is
 * what docker uses for build contexts.
 */

export const BLOCK = 512;

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink';

export interface TarHeader {
  /** Archive path, `/`-separated, no leading `/` or `./`; a directory's gets a trailing `/` here. */
  name: string;
  type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Data bytes that follow; 0 for anything but a regular file. */
  size: number;
  /** Nanoseconds since the epoch. */
  mtimeNs: bigint;
  /** Symlink target, or the earlier entry a hard link points to. */
  linkname?: string;
  uname?: string;
  gname?: string;
}

export interface EncodeOptions {
  /** Keep sub-second mtimes in a PAX `mtime` record; otherwise they are truncated to seconds (docker). */
  subsecondMtime?: boolean;
}

const TYPEFLAG: Record<TarEntryType, string> = { file: '0', hardlink: '1', symlink: '2', dir: '5' };
const NAME_SIZE = 100;
const PREFIX_SIZE = 155;
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;
const NS_PER_S = 1_000_000_000n;

/** The archive's end: two zero blocks. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

/** Zero bytes that round `size` up to a whole block. */
export function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rest);
}

/** Printable in a ustar field: ASCII without NUL (Go's archive/tar rule). */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) return false;
  }
  return true;
}

/** Go's splitUSTARPath: a long ASCII name as prefix + '/' + name, when the parts fit. */
export function splitUstarPath(name: string): [prefix: string, suffix: string] | undefined {
  let length = name.length;
  if (length <= NAME_SIZE || !isAscii(name)) return undefined;
  if (length > PREFIX_SIZE + 1) length = PREFIX_SIZE + 1;
  else if (name[length - 1] === '/') length--;
  const i = name.lastIndexOf('/', length - 1);
  const nlen = name.length - i - 1;
  if (i <= 0 || nlen > NAME_SIZE || nlen === 0 || i > PREFIX_SIZE) return undefined;
  return [name.slice(0, i), name.slice(i + 1)];
}

/** One PAX record: `<length> <key>=<value>\n`, the length counting the whole record. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = Buffer.byteLength(body);
  let length = bodyBytes + String(bodyBytes).length;
  if (String(length).length + bodyBytes !== length) length = bodyBytes + String(length).length;
  return `${length}${body}`;
}

/** `sec[.frac]` with the fraction's trailing zeros dropped, as PAX wants it. */
export function paxTime(ns: bigint): string {
  const sign = ns < 0n ? '-' : '';
  const abs = ns < 0n ? -ns : ns;
  const sec = abs / NS_PER_S;
  const frac = abs % NS_PER_S;
  if (frac === 0n) return `${sign}${sec}`;
  return `${sign}${sec}.${frac.toString().padStart(9, '0').replace(/0+$/, '')}`;
}

function writeString(block: Buffer, offset: number, size: number, value: string): void {
  block.write(value, offset, size, 'utf8');
}

/** Octal digits, zero-padded to `size - 1`, NUL-terminated. */
function writeOctal(block: Buffer, offset: number, size: number, value: number | bigint): void {
  block.write(`${value.toString(8).padStart(size - 1, '0')}\0`, offset, size, 'latin1');
}

function checksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] as number);
  return sum;
}

function ustarBlock(fields: {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: bigint;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
}): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, 0, NAME_SIZE, fields.name);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fields.uid);
  writeOctal(block, 116, 8, fields.gid);
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block.write(fields.typeflag, 156, 1, 'latin1');
  writeString(block, 157, NAME_SIZE, fields.linkname);
  block.write('ustar\u000000', 257, 8, 'latin1');
  writeString(block, 265, 32, fields.uname);
  writeString(block, 297, 32, fields.gname);
  writeOctal(block, 329, 8, 0);
  writeOctal(block, 337, 8, 0);
  writeString(block, 345, PREFIX_SIZE, fields.prefix);
  block.write(`${checksum(block).toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return block;
}

/**
 * The header blocks of one entry: a PAX extended header first when needed, then the ustar
 * header. The caller writes the data and {@link padding} after it.
 */
export function encodeHeader(header: TarHeader, options: EncodeOptions = {}): Buffer {
  const pax: string[] = [];
  const linkname = header.linkname ?? '';
  const size = header.type === 'file' ? header.size : 0;
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad tar entry size ${size}`);

  let name = header.name;
  let prefix = '';
  if (Buffer.byteLength(name) > NAME_SIZE || !isAscii(name)) {
    const split = splitUstarPath(name);
    if (split) [prefix, name] = split;
    else {
      pax.push(paxRecord('path', name));
      name = asciiPrefix(name, NAME_SIZE);
    }
  }
  let link = linkname;
  if (Buffer.byteLength(link) > NAME_SIZE || !isAscii(link)) {
    pax.push(paxRecord('linkpath', link));
    link = asciiPrefix(link, NAME_SIZE);
  }
  const id = (key: 'uid' | 'gid', value: number): number => {
    if (value <= MAX_OCTAL_7) return value;
    pax.push(paxRecord(key, String(value)));
    return 0;
  };
  const uid = id('uid', header.uid);
  const gid = id('gid', header.gid);
  let ustarSize = size;
  if (size > MAX_OCTAL_11) {
    pax.push(paxRecord('size', String(size)));
    ustarSize = 0;
  }
  let seconds = header.mtimeNs / NS_PER_S;
  if (header.mtimeNs < 0n && header.mtimeNs % NS_PER_S !== 0n) seconds -= 1n;
  const fraction = header.mtimeNs - seconds * NS_PER_S;
  if (seconds < 0n || seconds > BigInt(MAX_OCTAL_11)) {
    pax.push(paxRecord('mtime', paxTime(options.subsecondMtime ? header.mtimeNs : seconds * NS_PER_S)));
    seconds = 0n;
  } else if (options.subsecondMtime && fraction !== 0n) {
    pax.push(paxRecord('mtime', paxTime(header.mtimeNs)));
  }

  const ustar = ustarBlock({
    name,
    prefix,
    mode: header.mode & 0o7777,
    uid,
    gid,
    size: ustarSize,
    mtime: seconds,
    typeflag: TYPEFLAG[header.type],
    linkname: link,
    uname: header.uname ?? '',
    gname: header.gname ?? '',
  });
  if (pax.length === 0) return ustar;

  const data = Buffer.from(pax.join(''), 'utf8');
  const base = header.name.replace(/\/+$/, '').split('/').at(-1) ?? '';
  const paxHeader = ustarBlock({
    name: asciiPrefix(`PaxHeaders.0/${base}`, NAME_SIZE),
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: data.length,
    mtime: 0n,
    typeflag: 'x',
    linkname: '',
    uname: '',
    gname: '',
  });
  return Buffer.concat([paxHeader, data, padding(data.length), ustar]);
}

/** A field's stand-in when the real value is in a PAX record: ASCII only, at most `max` bytes. */
function asciiPrefix(value: string, max: number): string {
  let out = '';
  for (const ch of value) {
    const c = ch.codePointAt(0) ?? 0;
    out += c === 0 || c > 0x7f ? '_' : ch;
  }
  return out.slice(0, max);
}
