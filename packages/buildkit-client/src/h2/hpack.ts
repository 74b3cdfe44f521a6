/**
 * HPACK (RFC 7541) as the session server needs it: a full decoder (static and dynamic tables,
 * Huffman strings) for what the daemon's HTTP/2 client sends, and an encoder that writes every
 * field as a literal never added to the table, so the peer's decoder state never depends on ours.
 */

export type HeaderList = Array<[name: string, value: string]>;

export class HpackError extends Error {}

const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/**
 * Bit lengths of the Huffman codes of bytes 0-255 (RFC 7541 Appendix B). The code is canonical:
 * codes follow from the lengths alone, assigned in order of (length, byte), EOS (30 bits) last.
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];
const EOS = 256;

/** Decoding tree of the canonical code: node i's children at 2i and 2i+1; a leaf holds -1-symbol. */
const HUFFMAN_TREE = buildHuffmanTree();

function buildHuffmanTree(): Int32Array {
  const symbols = [...HUFFMAN_LENGTHS.keys(), EOS].sort((a, b) => lengthOf(a) - lengthOf(b) || a - b);
  // Nodes 0 (unused) and 1 (the root) take the first four slots.
  const tree: number[] = [0, 0, 0, 0];
  let code = 0;
  let prevLen = lengthOf(symbols[0] as number);
  for (const sym of symbols) {
    const len = lengthOf(sym);
    code <<= len - prevLen;
    prevLen = len;
    let node = 1;
    for (let i = len - 1; i >= 0; i--) {
      const bit = (code >>> i) & 1;
      const slot = 2 * node + bit;
      if (i === 0) {
        tree[slot] = -1 - sym;
        break;
      }
      let next = tree[slot] ?? 0;
      if (next === 0) {
        next = tree.length / 2;
        tree.push(0, 0);
        tree[slot] = next;
      }
      node = next;
    }
    code++;
  }
  return Int32Array.from(tree);
}

function lengthOf(sym: number): number {
  return sym === EOS ? 30 : (HUFFMAN_LENGTHS[sym] as number);
}

/** Decodes a Huffman string: a byte at a time, bits MSB first, down the tree. */
export function huffmanDecode(src: Buffer): Buffer {
  const out: number[] = [];
  let node = 1;
  let depth = 0;
  let allOnes = true;
  for (const byte of src) {
    for (let i = 7; i >= 0; i--) {
      const bit = (byte >> i) & 1;
      allOnes &&= bit === 1;
      const next = HUFFMAN_TREE[2 * node + bit] as number;
      depth++;
      if (next < 0) {
        const sym = -1 - next;
        if (sym === EOS) throw new HpackError('Huffman string contains EOS');
        out.push(sym);
        node = 1;
        depth = 0;
        allOnes = true;
      } else if (next === 0) {
        throw new HpackError('invalid Huffman code');
      } else {
        node = next;
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (the start of EOS).
  if (depth > 7 || !allOnes) throw new HpackError('invalid Huffman padding');
  return Buffer.from(out);
}

/** The largest integer a field may carry: lengths and indexes beyond it are hostile. */
const MAX_INT = 2 ** 28;

interface Entry {
  name: string;
  value: string;
  size: number;
}

/** One connection's decoder: its dynamic table lives as long as the connection. */
export class HpackDecoder {
  private readonly table: Entry[] = [];
  private tableBytes = 0;
  private maxTableBytes: number;

  /**
   * @param settingsTableBytes SETTINGS_HEADER_TABLE_SIZE this side announced (the encoder's bound).
   * @param maxListBytes a header list larger than this (RFC 7540 §6.5.2 sizes) is refused.
   */
  constructor(
    private readonly settingsTableBytes = 4096,
    private readonly maxListBytes = 1024 * 1024,
  ) {
    this.maxTableBytes = settingsTableBytes;
  }

  decode(block: Buffer): HeaderList {
    const out: HeaderList = [];
    let listBytes = 0;
    let pos = 0;
    const int = (prefixBits: number): number => {
      if (pos >= block.length) throw new HpackError('header block ends inside an integer');
      const max = (1 << prefixBits) - 1;
      let value = (block[pos++] as number) & max;
      if (value < max) return value;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError('header block ends inside an integer');
        const b = block[pos++] as number;
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (value > MAX_INT) throw new HpackError('integer too large');
        if ((b & 0x80) === 0) return value;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw new HpackError('header block ends before a string');
      const huffman = ((block[pos] as number) & 0x80) !== 0;
      const len = int(7);
      if (pos + len > block.length) throw new HpackError('string longer than its header block');
      const raw = block.subarray(pos, pos + len);
      pos += len;
      return (huffman ? huffmanDecode(raw) : raw).toString('latin1');
    };
    const emit = (name: string, value: string) => {
      listBytes += name.length + value.length + 32;
      if (listBytes > this.maxListBytes) throw new HpackError('header list too large');
      out.push([name, value]);
    };
    while (pos < block.length) {
      const b = block[pos] as number;
      if (b & 0x80) {
        const [name, value] = this.entry(int(7));
        emit(name, value);
      } else if (b & 0x40) {
        const index = int(6);
        const name = index === 0 ? str() : this.entry(index)[0];
        const value = str();
        this.add(name, value);
        emit(name, value);
      } else if (b & 0x20) {
        const size = int(5);
        if (size > this.settingsTableBytes)
          throw new HpackError('table size update over the announced bound');
        this.maxTableBytes = size;
        this.evict(0);
      } else {
        // Literal without indexing (0000) or never indexed (0001): not added to the table.
        const index = int(4);
        const name = index === 0 ? str() : this.entry(index)[0];
        emit(name, str());
      }
    }
    return out;
  }

  private entry(index: number): readonly [string, string] {
    if (index === 0) throw new HpackError('index 0');
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1] as readonly [string, string];
    const e = this.table[index - STATIC_TABLE.length - 1];
    if (!e) throw new HpackError(`index ${index} beyond the tables`);
    return [e.name, e.value];
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.evict(size);
    if (size > this.maxTableBytes) return;
    this.table.unshift({ name, value, size });
    this.tableBytes += size;
  }

  private evict(incoming: number): void {
    while (this.table.length > 0 && this.tableBytes + incoming > this.maxTableBytes) {
      this.tableBytes -= (this.table.pop() as Entry).size;
    }
  }
}

/** Encodes headers as literals without indexing, new names, no Huffman (names and values as latin1). */
export function encodeHeaders(headers: HeaderList): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0]), encodeInt(n.length, 7, 0), n, encodeInt(v.length, 7, 0), v);
  }
  return Buffer.concat(parts);
}

function encodeInt(value: number, prefixBits: number, flags: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([flags | value]);
  const bytes = [flags | max];
  let rest = value - max;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}
