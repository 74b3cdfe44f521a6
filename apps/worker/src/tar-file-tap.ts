/**
 * Picks a few small files out of a tar stream as it passes, without holding or altering the
 * stream: the worker uses it to keep its own copy of the provenance BuildKit writes into a tar
 * export. It reads only what BuildKit's exporter (Go's archive/tar) writes: ustar headers with
 * their prefix, PAX `path` records and GNU long names; sizes in octal or base-256.
 */
const BLOCK = 512;
/** A PAX or GNU long-name record bigger than this is not a name we look for: skipped, not read. */
const MAX_META_BYTES = 64 * 1024;

export class TarFileTap {
  /** The files wanted and seen, by normalized path. */
  readonly files = new Map<string, Buffer>();
  /** A wanted file larger than the bound: its path (its bytes were not kept). */
  oversized: string | undefined;

  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  /** Bytes of the current entry's data (and padding) still to pass. */
  private remaining = 0;
  private padding = 0;
  private collecting: {
    kind: 'file' | 'pax' | 'longname';
    name: string;
    parts: Buffer[];
    size: number;
  } | null = null;
  private nextName: string | undefined;
  private ended = false;

  constructor(
    private readonly wanted: (path: string) => boolean,
    private readonly maxFileBytes: number,
  ) {}

  write(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length && !this.ended) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - pos);
        this.collecting?.parts.push(Buffer.from(chunk.subarray(pos, pos + n)));
        this.remaining -= n;
        pos += n;
        if (this.remaining === 0) this.endData();
        continue;
      }
      if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - pos);
        this.padding -= n;
        pos += n;
        continue;
      }
      const n = Math.min(BLOCK - this.headerFill, chunk.length - pos);
      chunk.copy(this.header, this.headerFill, pos, pos + n);
      this.headerFill += n;
      pos += n;
      if (this.headerFill === BLOCK) {
        this.headerFill = 0;
        this.onHeader(this.header);
      }
    }
  }

  private onHeader(block: Buffer): void {
    if (block.every((b) => b === 0)) {
      this.ended = true;
      return;
    }
    const size = readSize(block.subarray(124, 136));
    const flag = String.fromCharCode(block[156] ?? 0);
    this.remaining = size;
    this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
    const name = normalize(this.nextName ?? headerName(block));
    if (flag === 'x' || flag === 'L') {
      const kind = flag === 'x' ? 'pax' : 'longname';
      this.collecting = size <= MAX_META_BYTES ? { kind, name, parts: [], size } : null;
    } else {
      this.nextName = undefined;
      const regular = flag === '0' || flag === '\0';
      if (regular && this.wanted(name)) {
        if (size <= this.maxFileBytes) this.collecting = { kind: 'file', name, parts: [], size };
        else {
          this.oversized = name;
          this.collecting = null;
        }
      } else this.collecting = null;
    }
    if (size === 0) this.endData();
  }

  private endData(): void {
    const done = this.collecting;
    this.collecting = null;
    if (!done) return;
    const data = Buffer.concat(done.parts);
    if (done.kind === 'file') this.files.set(done.name, data);
    else if (done.kind === 'longname') this.nextName = data.toString('utf8').replace(/\0.*$/s, '');
    else {
      const path = paxPath(data);
      if (path !== undefined) this.nextName = path;
    }
  }
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

function headerName(block: Buffer): string {
  const name = cString(block.subarray(0, 100));
  // POSIX ustar ("ustar\0"): a prefix field holds the leading directories; GNU's "ustar  " has none.
  const ustar = block.subarray(257, 263).toString('latin1') === 'ustar\0';
  const prefix = ustar ? cString(block.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function readSize(field: Buffer): number {
  if ((field[0] ?? 0) & 0x80) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + (field[i] ?? 0);
    return n;
  }
  const text = cString(field).trim();
  return text === '' ? 0 : Number.parseInt(text, 8);
}

/** PAX records are `<len> <key>=<value>\n`. */
function paxPath(data: Buffer): string | undefined {
  let pos = 0;
  let path: string | undefined;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const len = Number.parseInt(data.subarray(pos, space).toString('latin1'), 10);
    if (!Number.isInteger(len) || len <= 0) break;
    const record = data.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (record.slice(0, eq) === 'path') path = record.slice(eq + 1);
    pos += len;
  }
  return path;
}

function normalize(name: string): string {
  return name.replace(/^(\.?\/)+/, '').replace(/\/+$/, '');
}
