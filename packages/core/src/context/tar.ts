/**
 * A streaming, push-style tar reader shared by the upload validator and the worker's extractor, so
 * both accept exactly the same archives.
 *
 * Formats: ustar (name + prefix), GNU (long names/links in 'L'/'K' entries, base-256 numbers), PAX
 * ('x' records `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`, `SCHILY.xattr.*`; 'g' headers
 * checked, not applied) and old v7 headers. Everything that readers disagree about is rejected
 * instead of guessed at, so the entries we validated are the entries any later reader (GNU tar,
 * Go's archive/tar, ours) sees: a PAX `path` *and* a GNU long name for one entry, data after a
 * header-only entry (directories, links), a lone zero block followed by more headers, non-zero
 * bytes after the end-of-archive marker, 'g' headers that set `path`/`linkpath`/`size`/xattrs,
 * sparse files.
 */
import { createHash } from 'node:crypto';
import { AppError } from '../errors.js';
import type { ContextLimits } from './limits.js';

export const BLOCK_SIZE = 512;
/** Go's archive/tar, GNU tar and docker keep an extended attribute as a PAX record under this prefix. */
const XATTR_RECORD = 'SCHILY.xattr.';
/**
 * What a kept entry's attributes are charged against `maxXattrBytes` beyond their names and values:
 * the worker holds them, by entry name, for the whole build.
 */
const XATTR_ENTRY_COST = 128;
const XATTR_COST = 64;
/** `user.*` names that overlayfs (rootless, `userxattr`), fuse-overlayfs and containers/storage read. */
const HOST_USER_XATTR = /^user\.(overlay|fuseoverlayfs|containers)\./;

/**
 * The extended attributes a context keeps: `user.*` and `security.capability` (what `setcap`
 * writes, and the one attribute docker's own context tar carries, though BuildKit's receiver
 * loses it when it writes the file's data). The rest is dropped, unread and uncharged (a tar
 * made on macOS carries `com.apple.*` on every file): BuildKit's receiver sets every attribute it
 * is sent, as root, on its own disk, and `trusted.*` or `user.overlay.*` is where overlayfs keeps
 * its metadata, `security.selinux` labels and `system.*` ACLs are the builder host's business.
 */
function isKeptXattr(name: string): boolean {
  return name === 'security.capability' || (name.startsWith('user.') && !HOST_USER_XATTR.test(name));
}

/** GNU tar writes `%` and `=` in an attribute's name as `%25` and `%3D`. */
function decodeXattrName(raw: string): string {
  return raw.replace(/%(25|3D)/g, (_, code: string) => (code === '25' ? '%' : '='));
}
/** Longest file name (one path component) Linux file systems accept: such a context could not be built. */
export const NAME_MAX = 255;

export type EntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface TarEntry {
  /** 1-based position among the archive's entries (PAX/GNU meta headers not counted). */
  index: number;
  /** Byte offset of the entry's own header in the tar stream. */
  offset: number;
  /** Normalized path: no leading `./` or `/`, no empty or `.` components, no trailing `/`; `.` for the root. */
  name: string;
  type: EntryType;
  /** Data bytes that follow the header (0 for everything but regular files). */
  size: number;
  /** Permission bits including setuid/setgid/sticky (`mode & 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (fractional when it came from a PAX `mtime` record). */
  mtime: number;
  /** Symlink: the target, verbatim. Hard link: the normalized path of an earlier entry. Otherwise ''. */
  linkname: string;
  /**
   * A file's or directory's extended attributes from PAX `SCHILY.xattr.<name>` records (GNU tar,
   * Go, docker), those `isKeptXattr` keeps, when any. Never on links: a symlink's would be set
   * through it on the builder's host (fsutil's receiver uses setxattr(2)), a hard link shares its
   * target's inode.
   */
  xattrs?: Record<string, Buffer>;
}

export type TarEvent =
  | { type: 'entry'; entry: TarEntry }
  /** Data of the current regular file; a view into the chunk given to `write` (not copied). */
  | { type: 'data'; chunk: Buffer }
  | { type: 'entry-end'; entry: TarEntry };

export type TarLimits = Pick<
  ContextLimits,
  'maxUncompressedBytes' | 'maxEntries' | 'maxNameBytes' | 'maxPaxHeaderBytes' | 'maxXattrBytes'
>;

export interface TarParserOptions {
  limits: TarLimits;
  /** Emit `data` events (the extractor needs them, the validator does not). Default false. */
  emitData?: boolean;
  /** Message for an input whose first block is not a tar header. */
  notTarMessage?: string;
}

const invalid = (message: string) => new AppError('invalid_context', message);
const tooLarge = (message: string) => new AppError('context_too_large', message);

const ZEROS = Buffer.alloc(64 * 1024);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A name for messages: JSON-quoted, shortened when long. */
export function quote(name: string, max = 120): string {
  return JSON.stringify(name.length > max ? `${name.slice(0, max)}…` : name);
}

/** Printable ASCII as is, every other byte as \xNN: shows exactly what a non-UTF-8 name contains. */
function escapeBytes(bytes: Buffer, max = 120): string {
  let out = '';
  for (const b of bytes.subarray(0, max)) {
    out +=
      b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return `"${out}${bytes.length > max ? '…' : ''}"`;
}

function isAllZero(buf: Buffer): boolean {
  for (let pos = 0; pos < buf.length; pos += ZEROS.length) {
    const part = buf.subarray(pos, pos + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

function firstNonZero(buf: Buffer): number {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return i;
  return -1;
}

/** Bytes of a NUL-terminated (or full-width) header field. */
function field(block: Buffer, offset: number, length: number): Buffer {
  const raw = block.subarray(offset, offset + length);
  const nul = raw.indexOf(0);
  return nul === -1 ? raw : raw.subarray(0, nul);
}

/** An octal or GNU base-256 number field; null when it is malformed or out of range. */
function numeric(block: Buffer, offset: number, length: number): number | null {
  const first = block[offset] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) return null; // negative base-256
    let value = first & 0x7f;
    for (let i = 1; i < length; i++) {
      value = value * 256 + (block[offset + i] ?? 0);
      if (value > Number.MAX_SAFE_INTEGER) return null;
    }
    return value;
  }
  const text = block.toString('latin1', offset, offset + length).replace(/^[ \0]+|[ \0]+$/g, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return null;
  const value = Number.parseInt(text, 8);
  return value <= Number.MAX_SAFE_INTEGER ? value : null;
}

/**
 * Splits a tar path into components: drops empty and `.` components (so `./a//b/` is `a/b`), and
 * rejects absolute paths and any `..` component (even one that would stay inside, like `a/../b`).
 */
export function pathComponents(raw: string, what: string): string[] {
  if (raw.startsWith('/')) {
    throw invalid(`${what} ${quote(raw)} is an absolute path; paths in a build context must be relative`);
  }
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) {
    throw invalid(
      `${what} ${quote(raw)} contains a ".." component; paths in a build context must stay inside it`,
    );
  }
  return parts;
}

type Kind = 'directory' | 'file' | 'symlink';
interface PathNode {
  kind: Kind;
  children: Map<string, PathNode> | null;
}
const KIND_NAMES: Record<Kind, string> = { directory: 'directory', file: 'regular file', symlink: 'symlink' };

/**
 * What the archive has declared so far, as a tree: answers "is this an earlier entry", "is an ancestor
 * a symlink or a file" and "what is at the Dockerfile path" in O(path length). Directories that are only
 * implied by deeper names are nodes too; the node count is bounded (`maxNodes`) so a hostile archive of
 * very deep unique paths cannot make it grow without bound. Long components are keyed by their digest.
 */
export class PathTree {
  private readonly root: PathNode = { kind: 'directory', children: new Map() };
  private nodes = 0;

  constructor(private readonly maxNodes: number) {}

  /** Records `entry`, or throws when it contradicts what came before (see module notes). */
  add(entry: TarEntry): void {
    const parts = entry.name === '.' ? [] : entry.name.split('/');
    const last = parts.pop();
    if (last === undefined) {
      if (entry.type !== 'directory') {
        throw invalid(`entry ${entry.index} names the context root "." but is a ${typeName(entry.type)}`);
      }
      return;
    }
    let node = this.root;
    let prefix = '';
    for (const part of parts) {
      prefix = prefix ? `${prefix}/${part}` : part;
      let child = node.children?.get(key(part));
      if (!child) {
        child = this.create('directory');
        node.children?.set(key(part), child);
      } else if (child.kind === 'symlink') {
        throw invalid(
          `entry ${quote(entry.name)} would be written through ${quote(prefix)}, a symlink declared earlier in the archive; entries below a symlink are not allowed`,
        );
      } else if (child.kind !== 'directory') {
        throw invalid(
          `entry ${quote(entry.name)} is below ${quote(prefix)}, which is a ${KIND_NAMES[child.kind]} earlier in the archive`,
        );
      }
      node = child;
    }

    let kind: Kind;
    if (entry.type === 'hardlink') {
      if (entry.linkname === entry.name) {
        throw invalid(`hard link ${quote(entry.name)} points to itself`);
      }
      const target = this.lookup(entry.linkname);
      if (!target) {
        throw invalid(
          `hard link ${quote(entry.name)} points to ${quote(entry.linkname)}, which is not an earlier entry in the archive`,
        );
      }
      if (target.kind === 'directory') {
        throw invalid(
          `hard link ${quote(entry.name)} points to the directory ${quote(entry.linkname)}; hard links to directories are not allowed`,
        );
      }
      kind = target.kind;
    } else {
      kind = entry.type;
    }

    const existing = node.children?.get(key(last));
    if (existing) {
      // Duplicates: the later entry wins, as with tar and docker, except that a directory (which may
      // already have children) is never replaced by a non-directory.
      if (existing.kind === 'directory') {
        if (kind === 'directory') return;
        throw invalid(
          `entry ${quote(entry.name)} (a ${typeName(entry.type)}) replaces the directory ${quote(entry.name)} declared earlier in the archive`,
        );
      }
      existing.kind = kind;
      existing.children = kind === 'directory' ? new Map() : null;
      return;
    }
    node.children?.set(key(last), this.create(kind));
  }

  /** The kind of the entry at normalized `name`, or undefined when the archive has none there. */
  kindOf(name: string): Kind | undefined {
    return this.lookup(name)?.kind;
  }

  private lookup(name: string): PathNode | undefined {
    if (name === '.') return this.root;
    let node: PathNode | undefined = this.root;
    for (const part of name.split('/')) {
      node = node.children?.get(key(part));
      if (!node) return undefined;
    }
    return node;
  }

  private create(kind: Kind): PathNode {
    if (++this.nodes > this.maxNodes) {
      throw tooLarge(
        `the archive names more than ${this.maxNodes} distinct paths (entries plus the directories their names imply)`,
      );
    }
    return { kind, children: kind === 'directory' ? new Map() : null };
  }
}

function key(component: string): string {
  // NUL cannot occur in a component, so a digest key never collides with a literal one.
  return component.length <= 64 ? component : `\0${createHash('sha256').update(component).digest('base64')}`;
}

function typeName(type: EntryType): string {
  return type === 'file' ? 'regular file' : type === 'hardlink' ? 'hard link' : type;
}

const UNSUPPORTED_TYPES: Record<string, string> = {
  '3': 'a character device',
  '4': 'a block device',
  '6': 'a FIFO (named pipe)',
  S: 'a GNU sparse file',
  D: 'a GNU incremental-dump directory',
  M: 'a GNU multi-volume continuation',
  V: 'a GNU volume label',
  N: 'an old GNU long-name record',
};

interface PendingMeta {
  kind: 'x' | 'g' | 'L' | 'K';
  buf: Buffer;
  fill: number;
  offset: number;
}

/**
 * Feed it the tar bytes with `write`, then call `end` at EOF. Throws `AppError` (invalid_context or
 * context_too_large) at the first problem; after a throw the parser must not be used again.
 */
export class TarParser {
  readonly tree: PathTree;
  /** Entries seen so far. */
  entries = 0;
  /** Tar bytes consumed so far. */
  offset = 0;

  private state: 'header' | 'data' | 'padding' | 'zero' | 'end' = 'header';
  private readonly block = Buffer.alloc(BLOCK_SIZE);
  private blockFill = 0;
  private remaining = 0;
  private padding = 0;
  private meta: PendingMeta | null = null;
  private current: TarEntry | null = null;
  private last: TarEntry | null = null;
  // Meta headers collected for the next entry.
  private pax: Map<string, Buffer> | null = null;
  private paxBytes = 0;
  /** Bytes of extended attributes in the entries so far (maxXattrBytes). */
  private xattrBytes = 0;
  private longName: Buffer | null = null;
  private longLink: Buffer | null = null;
  private metaOffset = -1;
  private metaKind = '';

  private readonly limits: TarLimits;
  private readonly emitData: boolean;
  private readonly notTarMessage: string;

  constructor(options: TarParserOptions) {
    this.limits = options.limits;
    this.emitData = options.emitData ?? false;
    this.notTarMessage = options.notTarMessage ?? 'not a tar archive';
    this.tree = new PathTree(2 * this.limits.maxEntries);
  }

  write(chunk: Buffer, emit: (event: TarEvent) => void = () => {}): void {
    if (this.offset + chunk.length > this.limits.maxUncompressedBytes) {
      throw tooLarge(
        `the context is larger than the limit of ${this.limits.maxUncompressedBytes} bytes uncompressed (maxUncompressedBytes)`,
      );
    }
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case 'header':
        case 'zero': {
          let block: Buffer;
          if (this.blockFill === 0 && chunk.length - pos >= BLOCK_SIZE) {
            block = chunk.subarray(pos, pos + BLOCK_SIZE);
            pos += BLOCK_SIZE;
            this.offset += BLOCK_SIZE;
          } else {
            const n = Math.min(BLOCK_SIZE - this.blockFill, chunk.length - pos);
            chunk.copy(this.block, this.blockFill, pos, pos + n);
            this.blockFill += n;
            pos += n;
            this.offset += n;
            if (this.blockFill < BLOCK_SIZE) break;
            this.blockFill = 0;
            block = this.block;
          }
          this.onBlock(block, emit);
          break;
        }
        case 'data': {
          const n = Math.min(this.remaining, chunk.length - pos);
          const slice = chunk.subarray(pos, pos + n);
          if (this.meta) {
            slice.copy(this.meta.buf, this.meta.fill);
            this.meta.fill += n;
          } else if (this.emitData) {
            emit({ type: 'data', chunk: slice });
          }
          pos += n;
          this.offset += n;
          this.remaining -= n;
          if (this.remaining === 0) this.endData(emit);
          break;
        }
        case 'padding': {
          const n = Math.min(this.padding, chunk.length - pos);
          pos += n;
          this.offset += n;
          this.padding -= n;
          if (this.padding === 0) this.state = 'header';
          break;
        }
        case 'end': {
          const rest = chunk.subarray(pos);
          if (!isAllZero(rest)) {
            throw invalid(
              `unexpected data at offset ${this.offset + firstNonZero(rest)}, after the end-of-archive marker (two zero blocks)`,
            );
          }
          this.offset += rest.length;
          pos = chunk.length;
          break;
        }
      }
    }
  }

  /** Call at EOF: throws when the archive stops mid-entry. Missing end-of-archive blocks are accepted. */
  end(): void {
    const headerStart = this.offset - this.blockFill;
    switch (this.state) {
      case 'header':
        if (headerStart === 0) {
          throw invalid(this.offset === 0 ? 'the archive is empty (0 bytes of tar)' : this.notTarMessage);
        }
        if (this.blockFill > 0) {
          throw invalid(
            `the archive is truncated: it ends ${this.blockFill} bytes into the header block at offset ${headerStart}`,
          );
        }
        if (this.metaOffset >= 0) {
          throw invalid(
            `the archive is truncated: it ends after the ${this.metaKind} header at offset ${this.metaOffset}, without the entry it describes`,
          );
        }
        return;
      case 'zero':
        if (!isAllZero(this.block.subarray(0, this.blockFill))) {
          throw invalid(`the archive is truncated: it ends inside the header block at offset ${headerStart}`);
        }
        return;
      case 'data':
        if (this.meta) {
          throw invalid(
            `the archive is truncated: it ends inside the ${this.metaKind} header data at offset ${this.meta.offset}`,
          );
        }
        throw invalid(
          `the archive is truncated: entry ${quote(this.current?.name ?? '?')} declares ${this.current?.size} bytes but only ${(this.current?.size ?? 0) - this.remaining} follow`,
        );
      case 'padding':
        throw invalid(
          `the archive is truncated: it ends in the padding after ${this.last ? `entry ${quote(this.last.name)}` : 'a header'}`,
        );
      case 'end':
        return;
    }
  }

  private onBlock(block: Buffer, emit: (event: TarEvent) => void): void {
    const offset = this.offset - BLOCK_SIZE;
    if (block.equals(ZEROS.subarray(0, BLOCK_SIZE))) {
      if (this.state === 'zero') {
        this.state = 'end';
        return;
      }
      if (this.metaOffset >= 0) {
        throw invalid(
          `the ${this.metaKind} header at offset ${this.metaOffset} is followed by the end of the archive instead of the entry it describes`,
        );
      }
      this.state = 'zero';
      return;
    }
    if (this.state === 'zero') {
      throw invalid(
        `lone zero block at offset ${offset - BLOCK_SIZE} followed by more headers; a zero block may only appear in the end-of-archive marker`,
      );
    }
    this.verifyChecksum(block, offset);

    const flag = String.fromCharCode(block[156] ?? 0);
    const size = numeric(block, 124, 12);
    if (size === null) throw invalid(`invalid size field in the tar header at offset ${offset}`);

    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      this.startMeta(flag, size, offset, emit);
      return;
    }
    const entry = this.readEntry(block, flag, size, offset);
    this.tree.add(entry);
    this.pax = null;
    this.paxBytes = 0;
    this.longName = null;
    this.longLink = null;
    this.metaOffset = -1;
    this.current = entry;
    this.last = entry;
    emit({ type: 'entry', entry });
    this.startData(entry.size, emit);
  }

  private verifyChecksum(block: Buffer, offset: number): void {
    const stored = numeric(block, 148, 8);
    let unsigned = 0;
    let signed = 0;
    for (let i = 0; i < BLOCK_SIZE; i++) {
      const b = i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
      unsigned += b;
      signed += b > 127 ? b - 256 : b;
    }
    if (stored === unsigned || stored === signed) return;
    if (offset === 0) throw invalid(this.notTarMessage);
    throw invalid(
      `tar header checksum mismatch at offset ${offset} (stored ${stored ?? 'unreadable'}, computed ${unsigned}): the archive is corrupt`,
    );
  }

  private startMeta(
    flag: 'x' | 'g' | 'L' | 'K',
    size: number,
    offset: number,
    emit: (event: TarEvent) => void,
  ) {
    const { maxPaxHeaderBytes, maxNameBytes } = this.limits;
    const kindName =
      flag === 'x'
        ? 'PAX extended'
        : flag === 'g'
          ? 'PAX global'
          : flag === 'L'
            ? 'GNU long-name'
            : 'GNU long-link';
    if (flag === 'x' && this.paxBytes + size > maxPaxHeaderBytes) {
      const prior = this.paxBytes
        ? ` (after ${this.paxBytes} bytes of earlier PAX headers for the same entry)`
        : '';
      throw invalid(
        `the PAX extended header at offset ${offset} is ${size} bytes${prior}, more than the limit of ${maxPaxHeaderBytes} bytes (maxPaxHeaderBytes)`,
      );
    }
    if (flag === 'g' && size > maxPaxHeaderBytes) {
      throw invalid(
        `the PAX global header at offset ${offset} is ${size} bytes, more than the limit of ${maxPaxHeaderBytes} bytes (maxPaxHeaderBytes)`,
      );
    }
    if ((flag === 'L' || flag === 'K') && size > maxNameBytes + 1) {
      throw invalid(
        `the ${kindName} header at offset ${offset} holds a ${size}-byte ${flag === 'L' ? 'name' : 'link target'}, longer than the limit of ${maxNameBytes} bytes (maxNameBytes)`,
      );
    }
    if (flag === 'x') this.paxBytes += size;
    if (flag !== 'g' && this.metaOffset < 0) {
      this.metaOffset = offset;
      this.metaKind = kindName;
    }
    this.meta = { kind: flag, buf: Buffer.allocUnsafe(size), fill: 0, offset };
    this.startData(size, emit);
  }

  private startData(size: number, emit: (event: TarEvent) => void): void {
    this.padding = (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
    if (size === 0) {
      this.endData(emit);
      return;
    }
    this.remaining = size;
    this.state = 'data';
  }

  private endData(emit: (event: TarEvent) => void): void {
    const meta = this.meta;
    if (meta) {
      this.meta = null;
      this.finishMeta(meta);
    } else if (this.current) {
      emit({ type: 'entry-end', entry: this.current });
      this.current = null;
    }
    this.state = this.padding ? 'padding' : 'header';
  }

  private finishMeta(meta: PendingMeta): void {
    if (meta.kind === 'L') {
      this.longName = Buffer.from(field(meta.buf, 0, meta.buf.length));
      return;
    }
    if (meta.kind === 'K') {
      this.longLink = Buffer.from(field(meta.buf, 0, meta.buf.length));
      return;
    }
    const records = parsePax(meta.buf, meta.offset);
    if (meta.kind === 'g') {
      // GNU tar applies global records to every later entry, Go's archive/tar ignores them: refuse the
      // ones that would change what an entry is. (git archive writes a harmless `comment` here.)
      for (const name of records.keys()) {
        if (
          name === 'path' ||
          name === 'linkpath' ||
          name === 'size' ||
          name.startsWith('GNU.sparse.') ||
          name.startsWith(XATTR_RECORD)
        ) {
          throw invalid(
            `the PAX global header at offset ${meta.offset} sets "${name}"; global path, linkpath, size, sparse and xattr records are not supported`,
          );
        }
      }
      return;
    }
    this.pax ??= new Map();
    for (const [name, value] of records) this.pax.set(name, value);
  }

  private readEntry(block: Buffer, flag: string, headerSize: number, offset: number): TarEntry {
    if (++this.entries > this.limits.maxEntries) {
      throw tooLarge(`the archive has more than ${this.limits.maxEntries} entries (maxEntries)`);
    }
    const pax = this.pax;
    const where = `at offset ${offset}`;

    const paxPath = pax?.get('path');
    if (paxPath && this.longName) {
      throw invalid(
        `the entry ${where} has both a PAX path and a GNU long name; readers disagree on which applies`,
      );
    }
    let nameBytes = paxPath ?? this.longName;
    if (!nameBytes) {
      nameBytes = field(block, 0, 100);
      const posix = block.toString('latin1', 257, 263) === 'ustar\0';
      // star (a POSIX variant) keeps atime/ctime after a 131-byte prefix and ends the block with "tar\0".
      const star = posix && block.toString('latin1', 508, 512) === 'tar\0';
      const prefix = posix ? field(block, 345, star ? 131 : 155) : null;
      if (prefix && prefix.length > 0) nameBytes = Buffer.concat([prefix, Buffer.from('/'), nameBytes]);
    }
    const rawName = this.decodeName(nameBytes, `the name of the entry ${where}`);
    if (rawName === '') throw invalid(`the entry ${where} has an empty name`);

    let type: EntryType;
    switch (flag) {
      case '0':
      case '7':
        type = 'file';
        break;
      case '\0':
        type = rawName.endsWith('/') ? 'directory' : 'file';
        break;
      case '1':
        type = 'hardlink';
        break;
      case '2':
        type = 'symlink';
        break;
      case '5':
        type = 'directory';
        break;
      default: {
        const what = UNSUPPORTED_TYPES[flag];
        if (what) {
          throw invalid(
            `entry ${quote(rawName)} is ${what}; a build context may only hold regular files, directories, symlinks and hard links`,
          );
        }
        throw invalid(`entry ${quote(rawName)} has the unknown type flag ${JSON.stringify(flag)}`);
      }
    }
    const components = pathComponents(rawName, 'entry');
    const name = components.length > 0 ? components.join('/') : '.';
    for (const component of components) {
      const bytes = Buffer.byteLength(component);
      if (bytes > NAME_MAX) {
        throw invalid(
          `entry ${quote(name)} has a ${bytes}-byte path component; file names are limited to ${NAME_MAX} bytes`,
        );
      }
    }

    let size = headerSize;
    const paxSize = pax?.get('size');
    if (paxSize) size = paxNumber(paxSize, 'size', name, false);
    if (type !== 'file' && size !== 0) {
      throw invalid(`entry ${quote(name)} is a ${typeName(type)} but declares ${size} bytes of data`);
    }
    const end = offset + BLOCK_SIZE + size + ((BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE);
    if (end > this.limits.maxUncompressedBytes) {
      throw tooLarge(
        `entry ${quote(name)} declares ${size} bytes, which takes the context past the limit of ${this.limits.maxUncompressedBytes} bytes uncompressed (maxUncompressedBytes)`,
      );
    }

    let linkname = '';
    if (type === 'symlink' || type === 'hardlink') {
      const paxLink = pax?.get('linkpath');
      if (paxLink && this.longLink) {
        throw invalid(
          `entry ${quote(name)} has both a PAX linkpath and a GNU long link; readers disagree on which applies`,
        );
      }
      const raw = this.decodeName(
        paxLink ?? this.longLink ?? field(block, 157, 100),
        `the link target of ${quote(name)}`,
      );
      if (raw === '') throw invalid(`${typeName(type)} ${quote(name)} has an empty target`);
      if (type === 'hardlink') {
        const parts = pathComponents(raw, `the target of hard link ${quote(name)},`);
        if (parts.length === 0) throw invalid(`hard link ${quote(name)} points to the context root`);
        linkname = parts.join('/');
      } else {
        linkname = raw;
      }
    }

    const mode = numeric(block, 100, 8);
    let uid = numeric(block, 108, 8);
    let gid = numeric(block, 116, 8);
    let mtime = numeric(block, 136, 12);
    const paxUid = pax?.get('uid');
    const paxGid = pax?.get('gid');
    const paxMtime = pax?.get('mtime');
    if (paxUid) uid = paxNumber(paxUid, 'uid', name, false);
    if (paxGid) gid = paxNumber(paxGid, 'gid', name, false);
    if (paxMtime) mtime = paxNumber(paxMtime, 'mtime', name, true);
    if (mode === null || uid === null || gid === null || mtime === null) {
      const bad = mode === null ? 'mode' : uid === null ? 'uid' : gid === null ? 'gid' : 'mtime';
      throw invalid(`entry ${quote(name)} has an invalid ${bad} field in its header`);
    }

    const entry: TarEntry = {
      index: this.entries,
      offset,
      name,
      type,
      size,
      mode: mode & 0o7777,
      uid,
      gid,
      mtime,
      linkname,
    };
    const xattrs = pax && this.readXattrs(pax, entry);
    if (xattrs) entry.xattrs = xattrs;
    return entry;
  }

  private readXattrs(pax: Map<string, Buffer>, entry: TarEntry): Record<string, Buffer> | undefined {
    let xattrs: Record<string, Buffer> | undefined;
    for (const [record, value] of pax) {
      if (!record.startsWith(XATTR_RECORD)) continue;
      const name = decodeXattrName(record.slice(XATTR_RECORD.length));
      if (name === '') throw invalid(`entry ${quote(entry.name)} has a PAX xattr record without a name`);
      if ((entry.type !== 'file' && entry.type !== 'directory') || !isKeptXattr(name)) continue;
      if (!xattrs) {
        xattrs = {};
        this.chargeXattrs(Buffer.byteLength(entry.name) + XATTR_ENTRY_COST, entry.name);
      }
      this.chargeXattrs(Buffer.byteLength(name) + value.length + XATTR_COST, entry.name);
      // Memory of its own: a slice of Node's 8 KiB buffer pool would keep the whole slab, and
      // whatever else the header put there, alive for the build.
      const own = Buffer.allocUnsafeSlow(value.length);
      value.copy(own);
      xattrs[name] = own;
    }
    return xattrs;
  }

  private chargeXattrs(bytes: number, entry: string): void {
    this.xattrBytes += bytes;
    if (this.xattrBytes > this.limits.maxXattrBytes) {
      throw tooLarge(
        `the extended attributes kept up to entry ${quote(entry)} take more than ${this.limits.maxXattrBytes} bytes (maxXattrBytes; each entry that has some counts its name and ${XATTR_ENTRY_COST} bytes, each attribute its name, value and ${XATTR_COST} bytes)`,
      );
    }
  }

  private decodeName(bytes: Buffer, what: string): string {
    if (bytes.length > this.limits.maxNameBytes) {
      throw invalid(
        `${what} is ${bytes.length} bytes, longer than the limit of ${this.limits.maxNameBytes} bytes (maxNameBytes): ${escapeBytes(bytes, 60)}`,
      );
    }
    try {
      return utf8.decode(bytes);
    } catch {
      throw invalid(`${what} is not valid UTF-8: ${escapeBytes(bytes)}`);
    }
  }
}

function paxNumber(value: Buffer, name: string, entry: string, fractional: boolean): number {
  const text = value.toString('latin1');
  const ok = fractional ? /^-?\d{1,18}(\.\d+)?$/.test(text) : /^\d{1,16}$/.test(text);
  const n = ok ? Number(text) : Number.NaN;
  if (!Number.isFinite(n) || Math.abs(n) > Number.MAX_SAFE_INTEGER) {
    throw invalid(
      `entry ${quote(entry)} has an invalid PAX ${name} record ${JSON.stringify(text.slice(0, 40))}`,
    );
  }
  return n;
}

/** PAX records: `<length> <key>=<value>\n`, the length counting the whole record. */
function parsePax(buf: Buffer, offset: number): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  const bad = (why: string) => invalid(`malformed PAX header at offset ${offset}: ${why}`);
  let pos = 0;
  while (pos < buf.length) {
    const space = buf.indexOf(0x20, pos);
    const lengthText = space === -1 ? '' : buf.toString('latin1', pos, space);
    if (!/^[1-9]\d{0,9}$/.test(lengthText)) throw bad(`record at byte ${pos} does not start with a length`);
    const length = Number(lengthText);
    if (pos + length > buf.length || length < lengthText.length + 4) {
      throw bad(`record at byte ${pos} has length ${length}, which does not fit the header`);
    }
    const record = buf.subarray(space + 1, pos + length);
    if (record[record.length - 1] !== 0x0a) throw bad(`record at byte ${pos} does not end with a newline`);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw bad(`record at byte ${pos} has no key`);
    let name: string;
    try {
      name = utf8.decode(record.subarray(0, eq));
    } catch {
      throw bad(`record at byte ${pos} has a key that is not UTF-8`);
    }
    const value = record.subarray(eq + 1, record.length - 1);
    if (name.startsWith('GNU.sparse.')) {
      throw invalid(
        `the PAX header at offset ${offset} describes a sparse file (${name}); sparse files are not supported`,
      );
    }
    if (name === 'hdrcharset' && value.toString('latin1') !== 'ISO-IR 10646 2000 UTF-8') {
      throw invalid(
        `the PAX header at offset ${offset} declares hdrcharset=${value.toString('latin1')}; names must be UTF-8`,
      );
    }
    if ((name === 'path' || name === 'linkpath' || name === 'size') && value.length === 0) {
      throw invalid(`the PAX header at offset ${offset} has an empty "${name}" record`);
    }
    if ((name === 'path' || name === 'linkpath') && value.includes(0)) {
      throw invalid(`the PAX "${name}" record at offset ${offset} contains a NUL byte`);
    }
    records.set(name, Buffer.from(value));
    pos += length;
  }
  return records;
}
