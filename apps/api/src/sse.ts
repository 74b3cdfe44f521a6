import type { ServerResponse } from 'node:http';

/**
 * One server-sent event, every line of `data` its own `data:` field. A client ends a line at CR,
 * LF or CRLF, so all three split here: build output with a bare CR cannot start a field (or an
 * event) of its own. `id` (a log stream entry's id, never build output) is what a client sends
 * back as Last-Event-ID to resume.
 */
export function sseEvent(event: string, data: string, id?: string): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\n${data
    .split(/\r\n|\r|\n/)
    .map((l) => `data: ${l}`)
    .join('\n')}\n\n`;
}

export interface SseWriterOptions {
  /** Bytes a follower may leave unread in its socket buffer. */
  maxBufferedBytes: number;
  /** How long its buffer may stay full. */
  maxStallMs: number;
  /** Called once when the follower is past either bound. */
  onTooSlow: () => void;
}

/**
 * Writes events to one follower. Live entries are not waited for (one follower must not hold up
 * the others sharing its build's reader), so a follower that does not read is bounded by bytes
 * and time instead; `sendPaced` waits for 'drain' where the pace is ours to set (catching up).
 */
export class SseWriter {
  private stall: NodeJS.Timeout | undefined;
  private slow = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly opts: SseWriterOptions,
  ) {
    res.on('drain', () => this.clearStall());
    res.on('close', () => this.clearStall());
  }

  get open(): boolean {
    return !this.res.writableEnded && !this.res.destroyed && !this.slow;
  }

  send(event: string, data: string, id?: string): void {
    this.write(sseEvent(event, data, id));
  }

  comment(text: string): void {
    this.write(`: ${text}\n\n`);
  }

  /** Sends, then waits until the client took it in (or went away). */
  async sendPaced(event: string, data: string, id?: string): Promise<void> {
    this.send(event, data, id);
    if (!this.open || !this.res.writableNeedDrain) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
    });
  }

  private write(chunk: string): void {
    if (!this.open) return;
    const ok = this.res.write(chunk);
    if (this.res.writableLength > this.opts.maxBufferedBytes) this.tooSlow();
    else if (!ok && !this.stall) this.stall = setTimeout(() => this.tooSlow(), this.opts.maxStallMs);
  }

  private tooSlow(): void {
    if (this.slow) return;
    this.slow = true;
    this.clearStall();
    this.opts.onTooSlow();
  }

  private clearStall(): void {
    clearTimeout(this.stall);
    this.stall = undefined;
  }
}
