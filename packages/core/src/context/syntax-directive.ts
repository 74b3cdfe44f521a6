/**
 * A Dockerfile's frontend directive: `# syntax=<image>` (or `// syntax=`, or a JSON file with a
 * `syntax` key) makes BuildKit's Dockerfile frontend hand the build to that image instead of
 * parsing the file itself. BuildKit honours only an unbroken run of directive lines at the top;
 * this reads every leading comment and blank line, so it finds at least what BuildKit would.
 */
import { constants } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.js';

/** Bytes of the Dockerfile's start the validator keeps for this check. */
export const DIRECTIVE_HEAD_BYTES = 64 * 1024;

/** What a Dockerfile's start says about its frontend. */
export type FrontendDirective =
  | { kind: 'none' }
  | { kind: 'image'; image: string }
  /** Whether or which frontend it names cannot be told for sure: `why` says what stands in the way. */
  | { kind: 'unknown'; why: string };

const directiveLine = (prefix: string) =>
  new RegExp(`^${prefix}\\s*([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$`);
const FORMS: Array<[prefix: string, directive: RegExp]> = [
  ['#', directiveLine('#')],
  ['//', directiveLine('//')],
];

/** `head`: the Dockerfile's first bytes; `complete`: whether they are the whole file. */
export function frontendDirective(head: Buffer, complete: boolean): FrontendDirective {
  let text = head.toString('utf8').replace(/^\uFEFF/, '');
  // Newer BuildKit skips a first line starting with `#!` before it looks for directives.
  if (text.startsWith('#!')) {
    const eol = text.indexOf('\n');
    if (eol === -1) {
      return complete
        ? { kind: 'none' }
        : { kind: 'unknown', why: `its first line (#!) is longer than the ${head.length} bytes read` };
    }
    text = text.slice(eol + 1);
  }
  const named = new Set<string>();
  for (const [prefix, directive] of FORMS) {
    for (const raw of text.split('\n')) {
      const line = raw.replace(/\r$/, '').trim();
      if (line === '') continue;
      if (!line.startsWith(prefix)) break;
      const m = directive.exec(line);
      if (m && m[1]?.toLowerCase() === 'syntax' && m[2]) named.add(m[2]);
    }
  }
  if (text.trimStart().startsWith('{')) {
    if (!complete) return { kind: 'unknown', why: 'it is JSON longer than the bytes read' };
    try {
      const json: unknown = JSON.parse(text);
      const syntax = (json as Record<string, unknown> | null)?.syntax;
      if (typeof syntax === 'string') named.add(syntax);
    } catch {
      // Not JSON: the frontend parses it as a Dockerfile.
    }
  }
  // Which one wins differs between BuildKit versions (newer ones refuse the file).
  if (named.size > 1) return { kind: 'unknown', why: 'it names more than one frontend image' };
  const [image] = named;
  return image === undefined ? { kind: 'none' } : { kind: 'image', image };
}

/**
 * A Dockerfile that selects its frontend (`# syntax=`) makes BuildKit run that image with the
 * build's inputs: only images the operator allows (KILN_ALLOWED_FRONTENDS) may be named.
 * Throws `invalid_spec` otherwise.
 */
export function checkFrontendAllowed(frontend: FrontendDirective, allowed: readonly string[]): void {
  if (frontend.kind === 'none') return;
  const permitted = `this server allows ${allowed.length ? allowed.join(', ') : 'none'} (KILN_ALLOWED_FRONTENDS)`;
  if (frontend.kind === 'unknown') {
    throw new AppError(
      'invalid_spec',
      `cannot tell which frontend image the Dockerfile selects (# syntax=): ${frontend.why}; ${permitted}`,
    );
  }
  if (!allowed.includes(frontend.image)) {
    throw new AppError(
      'invalid_spec',
      `the Dockerfile selects the frontend image ${JSON.stringify(frontend.image.slice(0, 200))} (# syntax=); ${permitted}`,
    );
  }
}

/**
 * The frontend directive of the Dockerfile at `file` (a path in the context) under `dir`, read as
 * the validator reads an upload's. Not a regular file there (missing, a directory, a symlink,
 * which is not followed): `invalid_context`.
 */
export async function readFrontendDirective(dir: string, file: string): Promise<FrontendDirective> {
  const missing = () =>
    new AppError('invalid_context', `no Dockerfile at ${JSON.stringify(file)} in the context`);
  const full = path.join(dir, ...file.split('/'));
  // A directory on the way may be a symlink: where it leads must still be inside the context.
  const root = await realpath(dir);
  const parent = await realpath(path.dirname(full)).catch(() => {
    throw missing();
  });
  if (parent !== root && !parent.startsWith(root + path.sep)) throw missing();
  const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW).catch(
    (err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' || err.code === 'ELOOP' || err.code === 'ENOTDIR' ? missing() : err;
    },
  );
  try {
    if (!(await handle.stat()).isFile()) {
      throw new AppError(
        'invalid_context',
        `the Dockerfile path ${JSON.stringify(file)} is not a regular file`,
      );
    }
    // One byte more than is kept says whether the head is the whole file.
    const head = Buffer.alloc(DIRECTIVE_HEAD_BYTES + 1);
    let length = 0;
    while (length < head.length) {
      const { bytesRead } = await handle.read(head, length, head.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    const complete = length <= DIRECTIVE_HEAD_BYTES;
    return frontendDirective(head.subarray(0, Math.min(length, DIRECTIVE_HEAD_BYTES)), complete);
  } finally {
    await handle.close();
  }
}
