// The session's content store against buildkitd v0.24.0: a `type=local` cache exported into a
// store this process hosts (here a directory), then imported by a second, fresh daemon that never
// saw the build, which then does not run the RUN step again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type BuildkitClient, type ContentStore, connect } from '../src/index.js';
import { busyboxPath, makeContext } from '../test-support/context.js';
import { tarExport } from '../test-support/tar-export.js';

const run = promisify(execFile);
const address = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!address) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');
const SCRIPT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../scripts/lib/buildkitd.sh',
);

/** A content store in a directory: blobs/sha256/<hex>, written to a temp file and renamed. */
function directoryStore(root: string): ContentStore {
  const file = (digest: string) => path.join(root, 'blobs', ...digest.split(':'));
  return {
    async info(digest) {
      const st = await fs.stat(file(digest)).catch(() => undefined);
      return st ? { size: st.size } : undefined;
    },
    async read(digest, offset, length) {
      return createReadStream(file(digest), {
        start: offset,
        ...(length !== undefined ? { end: offset + length - 1 } : {}),
      });
    },
    async write(expected) {
      const final = file(expected);
      await fs.mkdir(path.dirname(final), { recursive: true });
      const tmp = `${final}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
      const sink = new PassThrough();
      const stored = pipeline(sink, createWriteStream(tmp)).then(
        () => fs.rename(tmp, final),
        async (err: unknown) => {
          await fs.rm(tmp, { force: true });
          throw err;
        },
      );
      return { sink, stored };
    },
  };
}

let dir: string;
let fresh: string;
let first: BuildkitClient;
let second: BuildkitClient;
let context: Awaited<ReturnType<typeof makeContext>>;

before(async () => {
  dir = await fs.mkdtemp('/tmp/kcs-');
  fresh = await fs.mkdtemp('/tmp/kb-');
  await run('bash', [SCRIPT, 'start', fresh]);
  first = await connect(address);
  second = await connect(`unix://${fresh}/buildkitd.sock`);
  context = await makeContext({
    busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
    Dockerfile: [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      `RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 5 && echo ${Date.now()} > /stamp"]`,
      '',
    ].join('\n'),
  });
});

after(async () => {
  first?.close();
  second?.close();
  await context?.cleanup();
  await run('bash', [SCRIPT, 'stop', fresh]).catch(() => undefined);
  for (const d of [dir, fresh]) if (d) await fs.rm(d, { recursive: true, force: true });
});

const solve = (client: BuildkitClient, cache: object) =>
  client.solve({
    frontend: 'dockerfile.v0',
    frontendAttrs: { 'force-network-mode': 'none' },
    localDirs: { context: context.dir, dockerfile: context.dir },
    exports: [tarExport()],
    contentStores: { project: directoryStore(dir) },
    ...cache,
  });

describe('a type=local cache in a content store served over the session', () => {
  test('exported by one daemon, imported by a fresh one: the RUN step does not run again', async () => {
    let started = Date.now();
    const exported = await solve(first, {
      cacheExports: [{ type: 'local', attrs: { dest: 'project', mode: 'max' } }],
    });
    const firstMs = Date.now() - started;
    const manifest = JSON.parse(exported.exporterResponse['cache.manifest'] ?? '{}') as { digest?: string };
    assert.match(manifest.digest ?? '', /^sha256:[0-9a-f]{64}$/, JSON.stringify(exported.exporterResponse));
    const blobs = await fs.readdir(path.join(dir, 'blobs', 'sha256'));
    assert.ok(blobs.includes((manifest.digest ?? '').slice(7)), 'the manifest is in the store');
    assert.ok(blobs.length >= 3, `layers and config too: ${blobs.length}`);

    started = Date.now();
    await solve(second, {
      cacheImports: [{ type: 'local', attrs: { src: 'project', digest: manifest.digest } }],
    });
    const secondMs = Date.now() - started;
    console.log(`  first build ${firstMs} ms, on a fresh daemon from the store ${secondMs} ms`);
    assert.ok(firstMs >= 5_000);
    assert.ok(secondMs < 5_000, `the RUN (sleep 5) ran again: ${secondMs} ms`);
  });
});
