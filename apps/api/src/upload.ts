import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AppError,
  type ContextLimits,
  contextKey,
  createContextValidator,
  type ObjectStorage,
} from '@kiln/core';

export interface StoredContext {
  digest: string;
  size: number;
  key: string;
}

export interface ReceivedContext extends StoredContext {
  /** Puts the upload into storage again (retention deleted the object after it was stored). */
  restore(): Promise<void>;
  /** Removes the temp copy; call it once the request is answered. */
  dispose(): Promise<void>;
}

/**
 * Streams an upload through validation into a temp file (hashing it on the way), then puts
 * it into storage under its content address unless that object already exists. Nothing is
 * held in memory. The temp file is removed on failure, also when the client goes away, and
 * otherwise kept until `dispose()`: the build row is inserted later, and should retention delete
 * the object in between, `restore()` puts it back (see create-build.ts).
 */
export async function receiveContext(
  body: Readable,
  opts: { storage: ObjectStorage; tmpDir: string; limits: Partial<ContextLimits>; dockerfilePath: string },
): Promise<ReceivedContext> {
  await fs.mkdir(opts.tmpDir, { recursive: true });
  const tmp = path.join(opts.tmpDir, `upload-${randomUUID()}.tar`);
  const dispose = () => fs.rm(tmp, { force: true });
  try {
    const validator = createContextValidator({ limits: opts.limits, dockerfilePath: opts.dockerfilePath });
    validator.result.catch(() => undefined);
    await pipeline(body, validator.stream, createWriteStream(tmp)).catch(async (err: unknown) => {
      // The validator's AppError is the reason; a pipeline error after it is only its echo.
      const reason = await validator.result.then(
        () => err,
        (e: unknown) => e,
      );
      if (reason instanceof AppError) throw reason;
      throw new AppError('invalid_context', `the upload did not complete: ${(reason as Error).message}`);
    });
    const summary = await validator.result;
    const key = contextKey(summary.sha256);
    const restore = async () => {
      await opts.storage.put(key, createReadStream(tmp));
    };
    if (!(await opts.storage.head(key))) await restore();
    return { digest: `sha256:${summary.sha256}`, size: summary.size, key, restore, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}
