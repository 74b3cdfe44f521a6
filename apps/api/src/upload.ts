import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AppError,
  type ContextLimits,
  checkFrontendAllowed,
  contextKey,
  createContextValidator,
  type KilnConfig,
  type ObjectStorage,
} from '@kiln/core';
import type { UploadSlot } from './upload-slots.js';

/** Where uploads are received before they are stored (removed at start-up when stale). */
export const uploadTmpDir = (config: Pick<KilnConfig, 'dataDir'>): string => path.join(config.dataDir, 'tmp');

export interface StoredContext {
  digest: string;
  size: number;
  key: string;
}

export interface ReceivedContext extends StoredContext {
  /** The bytes came with this request (not a build of a stored context by its digest). */
  uploaded: boolean;
  /** Puts the upload into storage under its content address (done only once a build uses it). */
  restore(): Promise<void>;
  /** Removes the temp copy; call it once the request is answered. */
  dispose(): Promise<void>;
}

/**
 * How much an upload may bring before it is refused, without waiting for the rest of it: `bytes`
 * known at the start, and past them `limit()`, looked up once (the upload waits for it) when
 * they are passed. Past the larger of both, `refusal` ends the upload.
 */
export interface UploadBudget {
  bytes: number;
  limit(): Promise<number>;
  refusal(received: number): AppError;
}

/** Passes the bytes through while the slot's spool takes them. */
function spoolGate(slot: Pick<UploadSlot, 'spool'>): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        slot.spool(chunk.length);
        callback(null, chunk);
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/** Passes the bytes through until they pass the budget. */
function budgetGate(budget: UploadBudget): Transform {
  let received = 0;
  let limit = budget.bytes;
  let lookedUp = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      if (received <= limit) return callback(null, chunk);
      if (lookedUp) return callback(budget.refusal(received));
      lookedUp = true;
      budget.limit().then(
        (more) => {
          limit = Math.max(limit, more);
          callback(received <= limit ? null : budget.refusal(received), chunk);
        },
        // Not the upload's fault: 503, not the 4xx the pipeline's other errors become.
        () => callback(new AppError('unavailable', 'the stored-bytes quota could not be checked: try again')),
      );
    },
  });
}

/**
 * Streams an upload through validation into a temp file (hashing it on the way). Nothing is
 * held in memory. The temp file is removed on failure, also when the client goes away, and
 * otherwise kept until `dispose()`. Storing is left to `restore()`, called when a build row
 * is inserted (create-build.ts): a request rejected after the upload (an idempotency conflict,
 * a bad form) or answered from the cache stores nothing that retention could never find.
 */
export async function receiveContext(
  body: Readable,
  opts: {
    storage: ObjectStorage;
    tmpDir: string;
    limits: Partial<ContextLimits>;
    dockerfilePath: string;
    /** KILN_ALLOWED_FRONTENDS: what `# syntax=` may name. */
    allowedFrontends: readonly string[];
    budget?: UploadBudget;
    /** The upload's slot: counts the temp file's bytes, and runs its put into storage. */
    slot?: Pick<UploadSlot, 'spool' | 'storing'>;
  },
): Promise<ReceivedContext> {
  await fs.mkdir(opts.tmpDir, { recursive: true });
  const tmp = path.join(opts.tmpDir, `upload-${randomUUID()}.tar`);
  const dispose = () => fs.rm(tmp, { force: true });
  try {
    const validator = createContextValidator({ limits: opts.limits, dockerfilePath: opts.dockerfilePath });
    validator.result.catch(() => undefined);
    // Created before the stream opens it, so a fast failure's rm cannot run before the open.
    const handle = await fs.open(tmp, 'wx', 0o600);
    const gates = [
      ...(opts.budget ? [budgetGate(opts.budget)] : []),
      ...(opts.slot ? [spoolGate(opts.slot)] : []),
    ];
    // The gates count the uncompressed tar, which is what is stored, charged and spooled.
    await pipeline([body, validator.stream, ...gates, handle.createWriteStream()]).catch(
      async (err: unknown) => {
        // The budget's refusal: the validator only sees its stream cut.
        if (err instanceof AppError) throw err;
        // The validator's AppError is the reason; a pipeline error after it is only its echo.
        const reason = await validator.result.then(
          () => err,
          (e: unknown) => e,
        );
        if (reason instanceof AppError) throw reason;
        throw new AppError('invalid_context', `the upload did not complete: ${(reason as Error).message}`);
      },
    );
    const summary = await validator.result;
    checkFrontendAllowed(summary.frontend, opts.allowedFrontends);
    const key = contextKey(summary.sha256);
    const put = () => opts.storage.putFile(key, tmp);
    const restore = async () => {
      await (opts.slot ? opts.slot.storing(put) : put());
    };
    return { digest: `sha256:${summary.sha256}`, size: summary.size, key, uploaded: true, restore, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}
