/**
 * What `kiln build` shows while it works, on stderr: plain lines (not a terminal, or
 * `--progress plain`), a live view on a terminal, one JSON object per event (`--progress json`),
 * or errors only (`--progress quiet`).
 */
import type { BuildView } from './api.js';
import { type CliError, formatError } from './errors.js';
import { formatBytes, formatDuration, printable, textWriter } from './format.js';
import type { OutStream } from './io.js';

export type ProgressMode = 'auto' | 'plain' | 'tty' | 'json' | 'quiet';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'plain', 'tty', 'json', 'quiet'];

export interface ContextSummary {
  root: string;
  files: number;
  bytes: number;
  dockerfile: string;
  ignoreFile: string | undefined;
}

export interface UploadProgress {
  /** File bytes read, of `total`. */
  read: number;
  total: number;
  /** Bytes handed to the connection (gzip output when compressed). */
  sent: number;
  compressed: boolean;
}

export interface UploadSummary {
  /** Undefined for an archive piped in on stdin, which is sent as it comes, never listed. */
  files: number | undefined;
  bytes: number;
  sent: number;
  compressed: boolean;
  ms: number;
  /** The context was unchanged and built by this digest: nothing was sent. */
  reused?: string;
}

/** What was sent, after "sent the build context": the counts, or the piped archive's size. */
const sentWhat = (p: UploadSummary) =>
  p.files === undefined
    ? ` from stdin: ${formatBytes(p.bytes)} (${p.compressed ? 'gzip' : 'tar'}) in ${formatDuration(p.ms)}`
    : `: ${p.files} files, ${formatBytes(p.bytes)} (${sentText(p)}) in ${formatDuration(p.ms)}`;

const uploadText = (p: UploadSummary) =>
  p.reused
    ? `the build context is unchanged (${p.files} files, ${formatBytes(p.bytes)}, ${p.reused}): not sent again`
    : `sent the build context${sentWhat(p)}`;

const sentText = (p: { sent: number; compressed: boolean }) =>
  p.compressed ? `${formatBytes(p.sent)} gzipped` : 'uncompressed';

export interface Reporter {
  context(c: ContextSummary): void;
  uploadProgress(p: UploadProgress): void;
  uploaded(p: UploadSummary): void;
  submitted(build: BuildView): void;
  log(text: string): void;
  finished(build: BuildView): void;
  canceling(id: string): void;
  downloadProgress(p: { bytes: number; total: number | undefined }): void;
  downloaded(p: { dest: string; size: number; digest: string; ms: number }): void;
  warn(message: string): void;
  error(err: CliError): void;
  close(): void;
}

export function createReporter(mode: ProgressMode, out: OutStream): Reporter {
  if (mode === 'json') return new JsonReporter(out);
  if (mode === 'quiet') return new QuietReporter(out);
  if (mode === 'tty' || (mode === 'auto' && out.isTTY)) return new TtyReporter(out);
  return new PlainReporter(out);
}

function buildDuration(b: BuildView): string {
  const start = Date.parse(b.startedAt ?? b.createdAt);
  const end = b.finishedAt ? Date.parse(b.finishedAt) : Date.now();
  return formatDuration(Math.max(0, end - start));
}

function shortDigest(digest: string): string {
  return digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1');
}

export class PlainReporter implements Reporter {
  /** Whether the last thing written ended a line. */
  protected atLineStart = true;

  /** A build's log lines, printable on a terminal (`--progress plain` there). */
  private readonly write: (text: string) => void;

  constructor(protected readonly out: OutStream) {
    this.write = textWriter(out);
  }

  /** Kiln's own line; what it quotes of the server (ids, statuses) is made printable. */
  protected line(text: string): void {
    this.out.write(`${this.atLineStart ? '' : '\n'}${printable(text)}\n`);
    this.atLineStart = true;
  }

  context(_c: ContextSummary): void {}
  uploadProgress(_p: UploadProgress): void {}
  uploaded(p: UploadSummary): void {
    this.line(`kiln: ${uploadText(p)}`);
  }
  submitted(build: BuildView): void {
    this.line(`kiln: build ${build.id} ${build.status}`);
  }
  log(text: string): void {
    if (text === '') return;
    this.write(text);
    this.atLineStart = text.endsWith('\n');
  }
  finished(build: BuildView): void {
    this.line(`kiln: build ${build.id} ${build.status} after ${buildDuration(build)}`);
  }
  canceling(id: string): void {
    this.line(`kiln: canceling build ${id}`);
  }
  downloadProgress(_p: { bytes: number; total: number | undefined }): void {}
  downloaded(p: { dest: string; size: number; digest: string; ms: number }): void {
    this.line(
      `kiln: wrote ${p.dest} (${formatBytes(p.size)}, ${shortDigest(p.digest)}) in ${formatDuration(p.ms)}`,
    );
  }
  warn(message: string): void {
    // Warnings carry the server's words (a lost log stream's last answer, a refused cancel).
    this.line(printable(`warning: ${message}`));
  }
  error(err: CliError): void {
    this.line(formatError(err));
  }
  close(): void {}
}

class QuietReporter extends PlainReporter {
  override uploaded(): void {}
  override submitted(): void {}
  override log(): void {}
  override finished(): void {}
  override canceling(): void {}
  override downloaded(): void {}
}

class JsonReporter implements Reporter {
  private id: string | undefined;
  constructor(private readonly out: OutStream) {}
  private emit(type: string, fields: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify({ type, time: new Date().toISOString(), ...fields })}\n`);
  }
  context(c: ContextSummary): void {
    this.emit('context', { ...c, ignoreFile: c.ignoreFile ?? null });
  }
  uploadProgress(): void {}
  uploaded(p: UploadSummary): void {
    this.emit('upload', {
      files: p.files ?? null,
      bytes: p.bytes,
      sentBytes: p.sent,
      compression: p.compressed ? 'gzip' : 'none',
      seconds: p.ms / 1000,
      reused: p.reused ?? null,
    });
  }
  submitted(build: BuildView): void {
    this.id = build.id;
    this.emit('build', { id: build.id, status: build.status, url: build.links.self });
  }
  log(text: string): void {
    if (text !== '') this.emit('log', { id: this.id, data: text });
  }
  finished(build: BuildView): void {
    this.emit('status', {
      id: build.id,
      status: build.status,
      ...(build.error ? { error: build.error } : {}),
      ...(build.artifact
        ? {
            artifact: {
              size: build.artifact.size,
              digest: build.artifact.digest,
              filename: build.artifact.filename,
            },
          }
        : {}),
    });
  }
  canceling(id: string): void {
    this.emit('cancel', { id });
  }
  downloadProgress(): void {}
  downloaded(p: { dest: string; size: number; digest: string; ms: number }): void {
    this.emit('artifact', {
      id: this.id,
      dest: p.dest,
      size: p.size,
      digest: p.digest,
      seconds: p.ms / 1000,
    });
  }
  warn(message: string): void {
    this.emit('warning', { message });
  }
  error(err: CliError): void {
    this.emit('error', { code: err.code ?? null, message: err.message, exitCode: err.exitCode });
  }
  close(): void {}
}

/**
 * A terminal: progress lines that rewrite themselves, and while building a header with the
 * elapsed time over the last lines of the log. A failed build leaves its last lines on screen.
 */
export class TtyReporter extends PlainReporter {
  private transient = false;
  private lastProgress = 0;
  private building: { id: string; since: number; status: string } | undefined;
  private tail: string[] = [];
  private partial = '';
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  static readonly REGION_LINES = 8;
  static readonly FAILURE_LINES = 30;

  private get width(): number {
    return Math.max(20, (this.out.columns || 80) - 1);
  }

  private fit(text: string): string {
    const clean = printable(text.replace(/\t/g, '  '));
    return clean.length > this.width ? `${clean.slice(0, this.width - 1)}…` : clean;
  }

  /** Removes the progress line or live region, so that ordinary output can follow. */
  private clear(): void {
    if (this.transient) {
      this.out.write('\r\x1b[2K');
      this.transient = false;
    }
    if (this.drawn > 0) {
      this.out.write(`\x1b[${this.drawn}F\x1b[J`);
      this.drawn = 0;
    }
  }

  private progressLine(text: string, force = false): void {
    const now = Date.now();
    if (!force && now - this.lastProgress < 100) return;
    this.lastProgress = now;
    this.out.write(`\r\x1b[2K${this.fit(text)}`);
    this.transient = true;
  }

  protected override line(text: string): void {
    this.clear();
    this.out.write(`${printable(text)}\n`);
    if (this.building) this.draw();
  }

  override uploadProgress(p: UploadProgress): void {
    const pct = p.total > 0 ? Math.min(100, Math.floor((p.read / p.total) * 100)) : 100;
    this.progressLine(
      `[+] Sending build context ${pct}%  ${formatBytes(p.read)} / ${formatBytes(p.total)}  (${sentText(p)})`,
    );
  }

  override uploaded(p: UploadSummary): void {
    this.line(
      p.reused
        ? `[+] Build context unchanged (${p.files} files, ${formatBytes(p.bytes)}): not sent again`
        : `[+] Sent build context${sentWhat(p)}`,
    );
  }

  override submitted(build: BuildView): void {
    this.line(`[+] Build ${build.id} ${build.status}`);
    this.building = { id: build.id, since: Date.now(), status: build.status };
    this.draw();
    this.timer = setInterval(() => this.draw(), 100);
    this.timer.unref();
  }

  override log(text: string): void {
    if (text === '') return;
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    this.tail.push(...lines);
    if (this.tail.length > TtyReporter.FAILURE_LINES)
      this.tail.splice(0, this.tail.length - TtyReporter.FAILURE_LINES);
    if (this.building) this.building.status = 'running';
  }

  private draw(): void {
    if (!this.building) return;
    this.clear();
    const lines = [...this.tail, this.partial]
      .filter((l) => l.trim() !== '')
      .slice(-TtyReporter.REGION_LINES);
    const elapsed = formatDuration(Date.now() - this.building.since);
    const header = `[+] Building ${elapsed} (${this.building.status})`;
    const out = [header, ...lines.map((l) => ` => ${l}`)].map((l) => `${this.fit(l)}\n`).join('');
    this.out.write(out);
    this.drawn = 1 + lines.length;
  }

  private stopBuilding(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.clear();
    this.building = undefined;
  }

  override finished(build: BuildView): void {
    this.stopBuilding();
    if (build.status !== 'succeeded') {
      const lines = [...this.tail, ...(this.partial ? [this.partial] : [])];
      for (const l of lines) this.out.write(`${printable(l)}\n`);
    }
    this.out.write(`[+] Building ${buildDuration(build)} (${printable(build.status)})\n`);
  }

  override canceling(id: string): void {
    this.stopBuilding();
    this.out.write(`[+] Canceling build ${printable(id)}\n`);
  }

  override downloadProgress(p: { bytes: number; total: number | undefined }): void {
    const pct = p.total ? `${Math.min(100, Math.floor((p.bytes / p.total) * 100))}%  ` : '';
    this.progressLine(
      `[+] Downloading ${pct}${formatBytes(p.bytes)}${p.total ? ` / ${formatBytes(p.total)}` : ''}`,
    );
  }

  override downloaded(p: { dest: string; size: number; digest: string; ms: number }): void {
    this.line(
      `[+] Wrote ${p.dest} (${formatBytes(p.size)}, ${shortDigest(p.digest)}) in ${formatDuration(p.ms)}`,
    );
  }

  override error(err: CliError): void {
    this.stopBuilding();
    this.out.write(`${formatError(err)}\n`);
  }

  override close(): void {
    this.stopBuilding();
  }
}
