/**
 * The build context as `docker build` sends it: the directory's files minus what the ignore
 * file excludes (chosen by fsutil's own walk, so exactly what BuildKit would take), but always
 * the Dockerfile and the ignore files (docker's TrimBuildFilesFromExcludes), as a tar stream
 * with owners 0:0.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { PatternMatcher, parseDockerignore, type WalkEntry, walk } from '@kiln/buildkit-client/context';
import { dockerfileInContext } from '@kiln/contract';
import { CliError } from './errors.js';
import { END_OF_ARCHIVE, encodeHeader, padding, type TarHeader } from './tar.js';

// Go os.FileMode bits, as fsutil's walk reports them.
const MODE_DIR = 0x80000000;
const MODE_SYMLINK = 1 << 27;
const MODE_DEVICE = 1 << 26;
const MODE_NAMED_PIPE = 1 << 25;
const MODE_SETUID = 1 << 23;
const MODE_SETGID = 1 << 22;
const MODE_STICKY = 1 << 20;

export const DOCKERIGNORE = '.dockerignore';

export interface ContextOptions {
  /** The PATH argument. */
  contextDir: string;
  /** `-f`: relative to `cwd` (as docker takes it), `-` for stdin, or undefined for PATH/Dockerfile. */
  dockerfile?: string | undefined;
  cwd: string;
  /** Reads all of stdin, for `-f -`. */
  readStdin?: () => Promise<Buffer>;
  /** Ctrl-C: the walk stops at the next entry (a large tree takes a while), throwing its reason. */
  signal?: AbortSignal | undefined;
}

export type ContextItem =
  | { kind: 'walk'; entry: WalkEntry }
  | { kind: 'inline'; path: string; data: Buffer; mode: number; mtimeNs: bigint };

export interface ContextPlan {
  /** The context directory, symlinks resolved. */
  root: string;
  /** The Dockerfile's path inside the archive: the build's `file`. */
  dockerfile: string;
  /** The ignore file whose patterns apply (archive path), if any. */
  ignoreFile: string | undefined;
  /** Its patterns, as BuildKit will apply them. */
  excludePatterns: string[];
  /** What goes into the archive, in fsutil's walk order (inline entries last). */
  items: ContextItem[];
  /** Regular files (hard links not counted) and their bytes. */
  files: number;
  bytes: number;
  /** Entries left out because the service refuses them in a context (devices, FIFOs). */
  skipped: string[];
  /** What the user should know about the selection, e.g. an ignore file that does not apply. */
  warnings: string[];
  /** When the walk began (ns since the epoch): a change after it may share an entry's timestamps. */
  walkedAt: bigint;
}

const toPosix = (p: string): string => p.split(path.sep).join('/');

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/**
 * A file of the context (`root`, resolved) by its path there, read only when it is one within
 * the context, as BuildKit would find it there: a symlink out of it (to /proc/self/environ, say)
 * would put a file of this machine into the upload.
 */
async function contextFile(root: string, rel: string): Promise<Buffer | undefined> {
  try {
    const real = await realpath(path.join(root, ...rel.split('/')));
    const inside = path.relative(root, real);
    if (inside === '' || inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside))
      return undefined;
    if (!(await stat(real)).isFile()) return undefined;
    return await readFile(real);
  } catch {
    return undefined;
  }
}

async function resolveRoot(cwd: string, contextDir: string): Promise<string> {
  const abs = path.resolve(cwd, contextDir);
  let real: string;
  try {
    real = await realpath(abs);
  } catch {
    throw new CliError(`unable to prepare context: path "${contextDir}" not found`);
  }
  if (!(await stat(real)).isDirectory()) {
    throw new CliError(`unable to prepare context: "${contextDir}" is not a directory`);
  }
  return real;
}

interface InlineFile {
  data: Buffer;
  mode: number;
  mtimeNs: bigint;
}

/**
 * Inside the context, the Dockerfile's path there. Outside (or stdin), its bytes, and the
 * `<Dockerfile>.dockerignore` beside it, which BuildKit applies wherever the Dockerfile is.
 */
type DockerfileSource =
  | { inside: true; rel: string }
  | { inside: false; data: Buffer; mode: number; ignore?: InlineFile & { path: string } };

/** docker's getDockerfileRelPath: `-f` relative to the working directory, symlinks resolved. */
async function resolveDockerfile(root: string, opts: ContextOptions): Promise<DockerfileSource> {
  if (opts.dockerfile === '-') {
    if (!opts.readStdin) throw new CliError('cannot read the Dockerfile from stdin here');
    return { inside: false, data: await opts.readStdin(), mode: 0o600 };
  }
  let abs: string;
  if (opts.dockerfile === undefined || opts.dockerfile === '') {
    abs = path.join(root, 'Dockerfile');
    // Like docker: a lower-case `dockerfile` is used when there is no `Dockerfile`.
    if (!(await isFile(abs)) && (await isFile(path.join(root, 'dockerfile')))) {
      abs = path.join(root, 'dockerfile');
    }
  } else abs = path.resolve(opts.cwd, opts.dockerfile);
  let real: string;
  try {
    real = await realpath(abs);
  } catch {
    throw new CliError(`cannot find the Dockerfile: "${abs}" does not exist`);
  }
  const st = await stat(real);
  if (!st.isFile()) throw new CliError(`the Dockerfile "${abs}" is not a file`);
  const rel = path.relative(root, real);
  // The server's own rule decides; an absolute `rel` (another drive on Windows) is outside too.
  const inContext = path.isAbsolute(rel) ? undefined : dockerfileInContext(toPosix(rel));
  if (inContext !== undefined) return { inside: true, rel: inContext };
  // Beside the Dockerfile as named: docker sends that directory as the Dockerfile's own local.
  const ignorePath = `${abs}.dockerignore`;
  const ignoreStat = await stat(ignorePath, { bigint: true }).catch(() => undefined);
  return {
    inside: false,
    data: await readFile(real),
    mode: st.mode & 0o7777,
    ...(ignoreStat?.isFile()
      ? {
          ignore: {
            path: ignorePath,
            data: await readFile(ignorePath),
            mode: Number(ignoreStat.mode & 0o7777n),
            mtimeNs: ignoreStat.mtimeNs,
          },
        }
      : {}),
  };
}

function parsePatterns(text: string, source: string): string[] {
  try {
    return parseDockerignore(text);
  } catch (err) {
    throw new CliError(`${source}: ${(err as Error).message}`);
  }
}

function matcherFor(patterns: string[], source: string | undefined): PatternMatcher {
  try {
    return new PatternMatcher(patterns);
  } catch (err) {
    throw new CliError(`${source ?? DOCKERIGNORE}: ${(err as Error).message}`);
  }
}

/** Which files the context holds: decided up front, so the upload can show a total. */
export async function planContext(opts: ContextOptions): Promise<ContextPlan> {
  const root = await resolveRoot(opts.cwd, opts.contextDir);
  const dockerfile = await resolveDockerfile(root, opts);

  // BuildKit's Dockerfile frontend prefers `<Dockerfile>.dockerignore` beside the Dockerfile.
  const outsideIgnore = dockerfile.inside ? undefined : dockerfile.ignore;
  let ignoreFile: string | undefined;
  let excludePatterns: string[] = [];
  const warnings: string[] = [];
  if (outsideIgnore) {
    excludePatterns = parsePatterns(outsideIgnore.data.toString('utf8'), outsideIgnore.path);
  } else {
    for (const candidate of [
      dockerfile.inside ? `${dockerfile.rel}.dockerignore` : undefined,
      DOCKERIGNORE,
    ]) {
      if (!candidate) continue;
      const text = await contextFile(root, candidate);
      if (!text) {
        // There, but not a file of the context: BuildKit would not read it either.
        if (await lstat(path.join(root, ...candidate.split('/'))).catch(() => undefined))
          warnings.push(
            `${candidate} is not a readable file inside the context (a symlink out of it?): its patterns do not apply`,
          );
        continue;
      }
      ignoreFile = candidate;
      excludePatterns = parsePatterns(text.toString('utf8'), ignoreFile);
      break;
    }
  }

  // The files the build needs are sent even when the patterns exclude them.
  const select = [...excludePatterns];
  if (select.length > 0) {
    const matcher = matcherFor(select, outsideIgnore?.path ?? ignoreFile);
    const keep = new Set([DOCKERIGNORE, ignoreFile, dockerfile.inside ? dockerfile.rel : undefined]);
    for (const p of keep) if (p && matcher.matchesOrParentMatches(p)) select.push(`!${p}`);
  }

  const walkedAt = BigInt(Date.now()) * 1_000_000n;
  const items: ContextItem[] = [];
  const skipped: string[] = [];
  let files = 0;
  let bytes = 0;
  try {
    for await (const entry of walk(root, select.length > 0 ? { excludePatterns: select } : {})) {
      opts.signal?.throwIfAborted();
      // The service refuses these in a context (the worker extracts it as root). Sockets are not
      // among them: the walk reports them as regular files, sent empty as docker does.
      if (entry.mode & (MODE_DEVICE | MODE_NAMED_PIPE)) {
        skipped.push(entry.path);
        continue;
      }
      items.push({ kind: 'walk', entry });
      if (!(entry.mode & (MODE_DIR | MODE_SYMLINK)) && entry.linkname === '') {
        files++;
        bytes += entry.size;
      }
    }
  } catch (err) {
    if (err instanceof CliError || opts.signal?.aborted) throw err;
    throw new CliError(`reading the context ${root}: ${(err as Error).message}`);
  }

  let file: string;
  if (dockerfile.inside) file = dockerfile.rel;
  else {
    // docker's AddDockerfileToBuildContext: the Dockerfile under a random name, which the
    // .dockerignore then names so that the build does not see it.
    file = `.dockerfile.${randomBytes(10).toString('hex')}`;
    const now = BigInt(Date.now()) * 1_000_000n;
    items.push({ kind: 'inline', path: file, data: dockerfile.data, mode: dockerfile.mode, mtimeNs: now });
    files++;
    bytes += dockerfile.data.length;
    if (outsideIgnore) {
      // Beside the Dockerfile in the archive too, naming both so that the build sees neither;
      // the context's own .dockerignore is left as it is (it does not apply to this build).
      ignoreFile = `${file}.dockerignore`;
      const data = Buffer.concat([outsideIgnore.data, Buffer.from(`\n${file}\n${ignoreFile}\n`)]);
      items.push({
        kind: 'inline',
        path: ignoreFile,
        data,
        mode: outsideIgnore.mode,
        mtimeNs: outsideIgnore.mtimeNs,
      });
      files++;
      bytes += data.length;
      excludePatterns.push(file, ignoreFile);
    } else {
      const at = items.findIndex((i) => i.kind === 'walk' && i.entry.path === DOCKERIGNORE);
      const old = at === -1 ? undefined : (items[at] as { kind: 'walk'; entry: WalkEntry }).entry;
      const previous = (old && (await contextFile(root, DOCKERIGNORE))) || Buffer.alloc(0);
      const ignore: ContextItem = {
        kind: 'inline',
        path: DOCKERIGNORE,
        data: Buffer.concat([previous, Buffer.from(`\n${file}\n`)]),
        mode: old ? goPerm(old.mode) : 0o600,
        mtimeNs: old ? old.modTime : now,
      };
      if (at === -1) items.push(ignore);
      else items[at] = ignore;
      excludePatterns.push(file);
      ignoreFile = DOCKERIGNORE;
    }
  }
  return {
    root,
    dockerfile: file,
    ignoreFile,
    excludePatterns,
    items,
    files,
    bytes,
    skipped,
    warnings,
    walkedAt,
  };
}

/** chmod bits (setuid/setgid/sticky included) of a Go FileMode. */
export function goPerm(mode: number): number {
  let perm = mode & 0o777;
  if (mode & MODE_SETUID) perm |= 0o4000;
  if (mode & MODE_SETGID) perm |= 0o2000;
  if (mode & MODE_STICKY) perm |= 0o1000;
  return perm;
}

export interface TarProgress {
  /** File data bytes read so far. */
  bytes: number;
  files: number;
}

export interface TarStreamOptions {
  onProgress?: (p: TarProgress) => void;
  onWarning?: (message: string) => void;
  /** Sub-second mtimes in PAX records (default true); false truncates to seconds like docker's tar. */
  subsecondMtime?: boolean;
}

const READ_CHUNK = 256 * 1024;
const BATCH = 64 * 1024;

/** The plan as a tar stream, read file by file as it is consumed. */
export function contextTarStream(plan: ContextPlan, opts: TarStreamOptions = {}): Readable {
  return Readable.from(tarChunks(plan, opts), { objectMode: false });
}

async function* tarChunks(plan: ContextPlan, opts: TarStreamOptions): AsyncGenerator<Buffer> {
  const encode = { subsecondMtime: opts.subsecondMtime ?? true };
  const progress: TarProgress = { bytes: 0, files: 0 };
  const written = new Set<string>();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const take = (): Buffer => {
    const out = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const add = (b: Buffer): boolean => {
    if (b.length > 0) {
      pending.push(b);
      pendingBytes += b.length;
    }
    return pendingBytes >= BATCH;
  };
  const header = (h: Omit<TarHeader, 'uid' | 'gid'>) => encodeHeader({ ...h, uid: 0, gid: 0 }, encode);

  for (const item of plan.items) {
    if (item.kind === 'inline') {
      add(
        header({
          name: item.path,
          type: 'file',
          mode: item.mode,
          size: item.data.length,
          mtimeNs: item.mtimeNs,
        }),
      );
      add(item.data);
      if (add(padding(item.data.length))) yield take();
      written.add(item.path);
      progress.files++;
      progress.bytes += item.data.length;
      opts.onProgress?.(progress);
      continue;
    }
    const e = item.entry;
    const mode = goPerm(e.mode);
    if (e.mode & MODE_DIR) {
      if (add(header({ name: `${e.path}/`, type: 'dir', mode, size: 0, mtimeNs: e.modTime }))) yield take();
      continue;
    }
    // A symlink, or a regular file whose linkname names an earlier entry (a hardlink): no content.
    const link =
      e.mode & MODE_SYMLINK
        ? 'symlink'
        : e.linkname !== '' && written.has(e.linkname)
          ? 'hardlink'
          : undefined;
    if (link) {
      const h = header({ name: e.path, type: link, mode, size: 0, mtimeNs: e.modTime, linkname: e.linkname });
      if (add(h)) yield take();
      continue;
    }
    // O_NONBLOCK: a file that became a fifo since the walk cannot hold the open. O_NOFOLLOW: one
    // swapped for a symlink since the walk is not followed out of the context.
    const flags = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;
    const fh = await open(e.absPath, flags).catch((err: NodeJS.ErrnoException) => err);
    if (fh instanceof Error) {
      // As docker build and buildctl (fsutil's sender ignores the open error): a socket, a file
      // this user may not read or one removed since the walk arrives as an empty file.
      opts.onWarning?.(`${e.path}: cannot be opened (${fh.code ?? fh.message}), sent as an empty file`);
      if (add(header({ name: e.path, type: 'file', mode, size: 0, mtimeNs: e.modTime }))) yield take();
      written.add(e.path);
      progress.files++;
      continue;
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) {
        opts.onWarning?.(`${e.path}: not a regular file, left out`);
        continue;
      }
      // Another file than the walk saw: replaced since, or reached through a parent directory
      // swapped for a symlink (O_NOFOLLOW guards only the last name), possibly out of the context.
      if (st.ino !== e.inode) {
        throw new CliError(
          `${e.path} in the context was replaced while it was being sent: run the build again`,
        );
      }
      const size = Number(st.size);
      add(header({ name: e.path, type: 'file', mode, size, mtimeNs: e.modTime }));
      let left = size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) throw new CliError(`${e.path} in the context shrank while it was being sent`);
        left -= bytesRead;
        progress.bytes += bytesRead;
        opts.onProgress?.(progress);
        if (add(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) yield take();
      }
      if (add(padding(size))) yield take();
      written.add(e.path);
      progress.files++;
      opts.onProgress?.(progress);
    } finally {
      await fh.close();
    }
  }
  add(END_OF_ARCHIVE);
  yield take();
}
