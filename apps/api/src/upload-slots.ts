import { AppError } from '@kiln/core';
import { ConcurrencyLimit, KeyedConcurrencyLimit } from './concurrency-limit.js';

/** Uploads that may wait for a slot, per slot: a burst of parallel CI jobs waits, a flood is refused. */
const WAITING_PER_SLOT = 8;
/**
 * Temp files put into storage at once: an S3 multipart put holds ~24 MiB of parts in memory, and
 * nothing else bounds how many projects' uploads are stored at the same moment.
 */
const PUTS_AT_ONCE = 4;

/** One upload's slot, and the disk its temp file takes. */
export interface UploadSlot {
  /** Counts `bytes` more of the temp file; throws `rate_limited` when they do not fit. */
  spool(bytes: number): void;
  /** Runs `put` (the temp file into storage) once one of the few puts at a time is free. */
  storing<T>(put: () => Promise<T>): Promise<T>;
  /** Gives the slot, and the spool bytes its upload took, back (once); after its temp file is gone. */
  release(): void;
  /**
   * Holds the slot until `reading` settles, whenever release() is called: an upload answered
   * before its body was read (a timeout) still writes its temp file while the answer goes out.
   * The read settles once that file stopped growing; its removal may still be under way.
   */
  releaseAfter(reading: Promise<unknown>): void;
}

/**
 * Context uploads in progress in this API process. Each holds a temp file as large as the
 * context limit until the build is created, so without bounds one project could fill the disk
 * every project's uploads need:
 * - per project, KILN_MAX_UPLOADS_PER_PROJECT uploads at once; past it an upload waits, its body
 *   unread (TCP holds the sender back), in arrival order; past the waiting room it is refused at
 *   once (`429`);
 * - all projects together, KILN_UPLOAD_SPOOL_BYTES of temp files, of which one project takes at
 *   most half: an upload that would pass either is refused as it arrives (`429`), so the disk
 *   (the API pod's volume) never fills, and one project's uploads never take all of it.
 */
export class UploadSlots {
  private readonly projects: KeyedConcurrencyLimit;
  private readonly puts = new ConcurrencyLimit(PUTS_AT_ONCE, Number.POSITIVE_INFINITY, 'context puts');
  private spooled = 0;
  private readonly spooledBy = new Map<string, number>();

  constructor(
    perProject: number,
    private readonly spoolBytes: number,
  ) {
    this.projects = new KeyedConcurrencyLimit(
      () =>
        new ConcurrencyLimit(
          perProject,
          perProject * WAITING_PER_SLOT,
          'context uploads',
          (running, waiting) =>
            `this project already has ${running} context uploads in progress here and ${waiting} waiting (KILN_MAX_UPLOADS_PER_PROJECT); retry when one has ended`,
        ),
    );
  }

  /** Takes a slot of `projectId`, waiting for one if need be. */
  async take(projectId: string): Promise<UploadSlot> {
    const release = await this.projects.acquire(projectId);
    let held = 0;
    let given = false;
    let releasing = false;
    let until: Promise<unknown> | undefined;
    const giveBack = () => {
      given = true;
      this.spooled -= held;
      const left = (this.spooledBy.get(projectId) ?? 0) - held;
      if (left > 0) this.spooledBy.set(projectId, left);
      else this.spooledBy.delete(projectId);
      release();
    };
    return {
      spool: (bytes) => {
        // Never counted once given back: nothing would take it off again.
        if (given) throw new Error('the upload slot was given back');
        const mine = this.spooledBy.get(projectId) ?? 0;
        if (this.spooled + bytes > this.spoolBytes) {
          throw new AppError(
            'rate_limited',
            `the uploads in progress here take all the room for them (KILN_UPLOAD_SPOOL_BYTES: ${this.spoolBytes} bytes); retry shortly`,
          );
        }
        if (mine + bytes > this.spoolBytes / 2) {
          throw new AppError(
            'rate_limited',
            `this project's uploads in progress here take half the room for them (KILN_UPLOAD_SPOOL_BYTES: ${this.spoolBytes} bytes), the most one project may; retry when one has ended`,
          );
        }
        this.spooled += bytes;
        this.spooledBy.set(projectId, mine + bytes);
        held += bytes;
      },
      storing: (put) => this.puts.run(put),
      release: () => {
        if (releasing) return;
        releasing = true;
        if (until) void until.then(giveBack, giveBack);
        else giveBack();
      },
      releaseAfter: (reading) => {
        until = reading;
      },
    };
  }
}
