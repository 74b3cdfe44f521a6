/**
 * Bytes of request bodies being read at once, shared by every reader of one API. Bodies are
 * read before anything can be verified, so without a bound anyone could hold gigabytes with
 * bodies that stop short; with a plain bound, anyone who keeps it full refuses every real
 * delivery. So when a chunk does not fit, the readers that have been reading for longest give
 * way (oldest first, at least `yieldAfterMs` old): providers send a payload at once, and keeping
 * the budget full then takes sending all of it again every `yieldAfterMs`, not once per timeout.
 */
export class ArrivingBodies {
  /** In the order the readers started: a Set iterates in insertion order. */
  private readonly readers = new Set<BodyReader>();
  private used = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly yieldAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** A new reader; `giveWay` is called (once, then it is closed) if it must make room for another. */
  open(giveWay: () => void): BodyReader {
    const reader = new BodyReader(this, this.now(), giveWay);
    this.readers.add(reader);
    return reader;
  }

  /** Room for `bytes` more for `reader`, made by older readers giving way if need be. */
  take(reader: BodyReader, bytes: number): boolean {
    if (!this.readers.has(reader)) return false;
    if (this.used + bytes > this.maxBytes) {
      const oldEnough = this.now() - this.yieldAfterMs;
      const yielding = [...this.readers].filter(
        (r) => r !== reader && r.held > 0 && r.startedAt <= oldEnough,
      );
      // None gives way for nothing: only when those that may would make room.
      const room = this.maxBytes - this.used + yielding.reduce((sum, r) => sum + r.held, 0);
      if (bytes > room) return false;
      for (const other of yielding) {
        if (this.used + bytes <= this.maxBytes) break;
        other.close();
        other.giveWay();
      }
    }
    this.used += bytes;
    reader.held += bytes;
    return true;
  }

  /** Frees what `reader` held; it takes nothing more. */
  close(reader: BodyReader): void {
    if (!this.readers.delete(reader)) return;
    this.used -= reader.held;
    reader.held = 0;
  }
}

export class BodyReader {
  held = 0;

  constructor(
    private readonly bodies: ArrivingBodies,
    readonly startedAt: number,
    readonly giveWay: () => void,
  ) {}

  /** Counts `bytes` more against the budget; false if they do not fit (nor after older readers gave way). */
  take(bytes: number): boolean {
    return this.bodies.take(this, bytes);
  }

  close(): void {
    this.bodies.close(this);
  }
}
