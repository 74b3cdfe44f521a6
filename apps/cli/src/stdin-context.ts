/**
 * `kiln build -`: stdin is a build context tar (plain or gzip-compressed), or a Dockerfile with
 * no context, told apart as docker does (DetectArchiveReader: compressed, or a valid tar header,
 * is an archive; anything else is the Dockerfile). The archive streams on to the server as it
 * comes; only its first two blocks are held to look at.
 */
import { addAbortSignal, Readable } from 'node:stream';
import { CliError, EXIT_USAGE } from './errors.js';
import { BLOCK } from './tar.js';

export type StdinContext =
  | { kind: 'archive'; gzip: boolean; body: Readable }
  | { kind: 'dockerfile'; data: Buffer };

/** A Dockerfile is read whole; more than this is no Dockerfile anyone meant. */
export const MAX_STDIN_DOCKERFILE = 1 << 20;

/** Compressions docker also takes, which the API does not: named, with how to undo them. */
const OTHER_COMPRESSIONS: ReadonlyArray<{ name: string; magic: number[]; undo: string }> = [
  { name: 'bzip2', magic: [0x42, 0x5a, 0x68], undo: 'bzip2 -dc context.tar.bz2' },
  { name: 'xz', magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], undo: 'xz -dc context.tar.xz' },
  { name: 'zstd', magic: [0x28, 0xb5, 0x2f, 0xfd], undo: 'zstd -dc context.tar.zst' },
];

const startsWith = (buf: Buffer, magic: number[]) => magic.every((b, i) => buf[i] === b);

/** A tar header block: its checksum field matches its bytes (the check Go's tar reader makes). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < BLOCK) return false;
  const field = block
    .subarray(148, 156)
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] as number);
  return sum === Number.parseInt(field, 8);
}

/**
 * What stdin holds. With `signal`, an abort destroys stdin and rejects with its reason (a pipe
 * whose writer stalls may never send the two blocks looked at); the archive's body then ends
 * in that error too.
 */
export async function readStdinContext(
  stdin: Readable & { isTTY?: boolean },
  signal?: AbortSignal,
): Promise<StdinContext> {
  if (signal) addAbortSignal(signal, stdin);
  try {
    return await classify(stdin);
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  }
}

async function classify(stdin: Readable & { isTTY?: boolean }): Promise<StdinContext> {
  if (stdin.isTTY) {
    throw new CliError(
      'kiln build -: stdin is a terminal; pipe the context into it: kiln build - < context.tar (a tar, a gzip-compressed tar, or a Dockerfile)',
      EXIT_USAGE,
    );
  }
  const chunks = stdin[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < 2 * BLOCK) {
    const next = await chunks.next();
    if (next.done) {
      ended = true;
      break;
    }
    head.push(next.value);
    length += next.value.length;
  }
  const start = Buffer.concat(head);
  if (start.length === 0) {
    throw new CliError(
      'kiln build -: stdin is empty: pipe a tar, a gzip-compressed tar or a Dockerfile into it',
      EXIT_USAGE,
    );
  }
  const rest = async function* () {
    yield start;
    if (ended) return;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield next.value;
    }
  };
  if (startsWith(start, [0x1f, 0x8b])) return { kind: 'archive', gzip: true, body: Readable.from(rest()) };
  for (const { name, magic, undo } of OTHER_COMPRESSIONS) {
    if (startsWith(start, magic)) {
      throw new CliError(
        `kiln build -: stdin is ${name}-compressed; Kiln takes a tar or a gzip-compressed tar (decompress it first: ${undo} | kiln build - ...)`,
        EXIT_USAGE,
      );
    }
  }
  if (isTarHeader(start)) return { kind: 'archive', gzip: false, body: Readable.from(rest()) };
  const data: Buffer[] = [];
  let size = 0;
  for await (const chunk of rest()) {
    size += chunk.length;
    if (size > MAX_STDIN_DOCKERFILE) {
      throw new CliError(
        `kiln build -: stdin is not a tar or gzip archive, and at over ${MAX_STDIN_DOCKERFILE} bytes not a Dockerfile either`,
        EXIT_USAGE,
      );
    }
    data.push(chunk);
  }
  return { kind: 'dockerfile', data: Buffer.concat(data) };
}
