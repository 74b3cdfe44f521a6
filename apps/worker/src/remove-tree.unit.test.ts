// removeTree as the worker runs in its image: not root, so directory permissions apply.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, lchown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { removeTree } from './remove-tree.js';

const NOBODY = 65534;

/** A build directory as a context with read-only and unreadable directories leaves it. */
async function buildDir(root: string): Promise<string> {
  const tree = path.join(root, 'build');
  await mkdir(path.join(tree, 'context/ro/sub'), { recursive: true });
  await mkdir(path.join(tree, 'context/locked'), { recursive: true });
  await writeFile(path.join(tree, 'context/ro/sub/f'), 'x');
  await writeFile(path.join(tree, 'context/ro/g'), 'y');
  await writeFile(path.join(tree, 'context/locked/h'), 'z');
  await chmod(path.join(tree, 'context/ro/sub'), 0o555);
  await chmod(path.join(tree, 'context/ro'), 0o500);
  await chmod(path.join(tree, 'context/locked'), 0o000);
  return tree;
}

async function chownTree(dir: string, uid: number): Promise<void> {
  await lchown(dir, uid, uid);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(p, uid);
    else await lchown(p, uid, uid);
  }
}

test('a tree with directories its owner may not write into is removed, as a non-root worker', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'kiln-remove-tree-'));
  try {
    const tree = await buildDir(root);
    if (process.getuid?.() === 0) {
      // Root ignores permissions: the removal runs as nobody, who owns the tree, as the worker
      // would. The child gets the module as plain JavaScript beside the tree: it may not be able
      // to read the checkout (or tsx) at all.
      await chownTree(root, NOBODY);
      const source = await readFile(fileURLToPath(new URL('./remove-tree.ts', import.meta.url)), 'utf8');
      const module = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      }).outputText;
      const script = path.join(root, 'remove.mjs');
      await writeFile(path.join(root, 'remove-tree.mjs'), module);
      await writeFile(
        script,
        "import { removeTree } from './remove-tree.mjs';\nawait removeTree(process.argv[2]);\n",
      );
      for (const file of ['remove.mjs', 'remove-tree.mjs'])
        await lchown(path.join(root, file), NOBODY, NOBODY);
      await promisify(execFile)(process.execPath, [script, tree], {
        cwd: root,
        uid: NOBODY,
        gid: NOBODY,
        env: { PATH: process.env.PATH ?? '', HOME: root },
        timeout: 60_000,
      });
    } else await removeTree(tree);
    await assert.rejects(stat(tree), { code: 'ENOENT' });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
