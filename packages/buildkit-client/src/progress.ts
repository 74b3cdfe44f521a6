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
        if (e.state === 'started') this.write(`\n#${n} ${e.vertex.name}\n`);
        else if (e.state === 'cached') this.write(`#${n} CACHED\n`);
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
        if (e.completed) this.write(`#${n} ${e.name}${e.total > 0 ? ` ${e.current}/${e.total}` : ''} done\n`);
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
