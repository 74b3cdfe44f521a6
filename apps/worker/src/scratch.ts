/**
 * The worker process's scratch directory, `<parent>/kiln-worker-<pid>-<random>`: every running
 * build's temp directory (extracted context, log) lives in it. A worker killed with SIGKILL
 * cannot remove its own, so a worker starting up removes those of worker processes that are gone
 * (no process with that pid, or its own pid: a container restarted with the same pid).
 */
import { mkdtemp, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '@kiln/core';
import { removeTree } from './remove-tree.js';

export interface ScratchDir {
  dir: string;
  remove(): Promise<void>;
}

export async function createScratchDir(parent: string, logger: Logger): Promise<ScratchDir> {
  await removeAbandoned(parent, logger);
  const dir = await mkdtemp(path.join(parent, `kiln-worker-${process.pid}-`));
  return { dir, remove: () => removeTree(dir) };
}

async function removeAbandoned(parent: string, logger: Logger): Promise<void> {
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(/^kiln-worker-(\d+)-/.exec(name)?.[1]);
    if (!pid || (pid !== process.pid && isAlive(pid))) continue;
    const dir = path.join(parent, name);
    try {
      await removeTree(dir);
      logger.info({ dir }, 'removed the scratch directory of a worker that is gone');
    } catch (err) {
      logger.warn({ dir, err: (err as Error).message }, 'could not remove an abandoned scratch directory');
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, it is just not ours to signal.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
