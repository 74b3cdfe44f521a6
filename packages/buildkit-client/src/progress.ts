import type { StatusEvent, VertexInfo } from './status.js';

/**
 * Renders status events as `buildctl --progress=plain` does: `#N name`, timestamped log lines,
 * progress lines, then `#N DONE 0.3s` / `#N CACHED` / `#N ERROR: ...`.
 */
/** An unfinished line longer than this is written as it is rather than held for its newline. */
const MAX_PARTIAL_CHARS = 64 * 1024;

export class PlainProgressRenderer {
  private readonly numbers = new Map<string, number>();
  private readonly partial = new Map<string, string>();
  private headerWritten = false;

  constructor(private readonly write: (text: string) => void) {}

  private number(v: VertexInfo): number {
    let n = this.numbers.get(v.digest);
    if (n === undefined) {
      n = this.numbers.size + 1;
      this.numbers.set(v.digest, n);
    }
    return n;
  }

  private elapsed(v: VertexInfo, at: Date): string {
    const start = v.started?.getTime() ?? at.getTime();
    return ((at.getTime() - start) / 1000).toFixed(3);
  }

  render(e: StatusEvent): void {
    const n = this.number(e.vertex);
    switch (e.type) {
      case 'vertex':
        // A step that ended will not finish its last line: write it rather than hold it.
        if (e.state !== 'started') this.flushPartial(e.vertex, n, e.vertex.completed ?? new Date());
        if (e.state === 'started') {
          // A blank line between steps, none before the first.
          this.write(`${this.headerWritten ? '\n' : ''}#${n} ${e.vertex.name}\n`);
          this.headerWritten = true;
        } else if (e.state === 'cached') this.write(`#${n} CACHED\n`);
        else if (e.state === 'error') this.write(`#${n} ERROR: ${e.vertex.error}\n`);
        else this.write(`#${n} DONE ${this.duration(e.vertex)}\n`);
        break;
      case 'log': {
        const text = (this.partial.get(e.vertex.digest) ?? '') + e.data.toString('utf8');
        const lines = text.split('\n');
        this.partial.set(e.vertex.digest, lines.pop() ?? '');
        for (const line of lines) this.write(`#${n} ${this.elapsed(e.vertex, e.timestamp)} ${line}\n`);
        if ((this.partial.get(e.vertex.digest) ?? '').length > MAX_PARTIAL_CHARS) {
          this.flushPartial(e.vertex, n, e.timestamp);
        }
        break;
      }
      case 'progress':
        if (e.completed) this.write(`#${n} ${e.id}${progressAmount(e)}${progressTime(e)} done\n`);
        break;
      case 'warning':
        this.write(`#${n} WARNING: ${e.message}\n`);
        break;
    }
  }

  private flushPartial(v: VertexInfo, n: number, at: Date): void {
    const rest = this.partial.get(v.digest);
    this.partial.delete(v.digest);
    if (rest) this.write(`#${n} ${this.elapsed(v, at)} ${rest}\n`);
  }

  private duration(v: VertexInfo): string {
    if (!v.started || !v.completed) return '0.0s';
    return `${((v.completed.getTime() - v.started.getTime()) / 1000).toFixed(1)}s`;
  }
}

type ProgressEvent = Extract<StatusEvent, { type: 'progress' }>;

/** buildctl's ` 50.10MB` or ` 1.20kB / 3.40MB`: decimal units, as github.com/tonistiigi/units prints them. */
function progressAmount(e: ProgressEvent): string {
  if (e.total !== 0) return ` ${decimalBytes(e.current)} / ${decimalBytes(e.total)}`;
  return e.current !== 0 ? ` ${decimalBytes(e.current)}` : '';
}

/** ` 0.9s` from the status's start to its last update, left out under 10 ms, as buildctl does. */
function progressTime(e: ProgressEvent): string {
  if (!e.started) return '';
  const seconds = (e.timestamp.getTime() - e.started.getTime()) / 1000;
  return seconds > 0.01 ? ` ${seconds.toFixed(1)}s` : '';
}

const DECIMAL_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];

function decimalBytes(n: number): string {
  let unit = 0;
  let base = 1;
  while (unit < DECIMAL_UNITS.length - 1 && Math.abs(n) >= base * 1000) {
    base *= 1000;
    unit += 1;
  }
  return unit === 0 ? `${n}B` : `${(n / base).toFixed(2)}${DECIMAL_UNITS[unit]}`;
}
