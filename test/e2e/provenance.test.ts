// Provenance and reproducible outputs on standalone buildkitd v0.24.0 (KILN_TEST_BUILDKITD_ADDR
// plus a second daemon of this file's own):
// - provenance=max: BuildKit writes provenance.json into the tar artifact; Kiln keeps the same
//   statement, lists it in the build view and serves it by its own signed URL (a tampered
//   signature is refused);
// - sourceDateEpoch: the same context and spec, built twice without cache on two different
//   builders, give byte-identical artifacts (and without it they differ, so the check can fail).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { LocalDirStorage, type PutOptions } from '@kiln/core';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import {
  type ApiClient,
  apiClient,
  busyboxContext,
  download,
  RUN,
  sha256,
  sleep,
  startBuildkitd,
  tgz,
} from '../support/processes.js';

const BUILDKITD = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!BUILDKITD) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');

// A RUN whose output carries the time it ran, and a file from the context.
const DOCKERFILE = [
  'FROM scratch',
  'COPY busybox /bin/busybox',
  RUN('/bin/busybox mkdir -p /out && /bin/busybox sleep 2 && echo built > /out/result.txt'),
  'COPY notes.txt /out/notes.txt',
  '',
].join('\n');

interface View {
  id: string;
  status: string;
  builder: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string; digest: string };
  provenance?: { mode: string; url: string; expiresAt: string };
  links: { provenance?: string };
}

let kiln: TestKiln;
let client: ApiClient;
let context: Buffer;
let second: Awaited<ReturnType<typeof startBuildkitd>>;

/** Keys whose next put fails, once each: a storage failing under the worker at one object. */
const failingPuts = new Set<string>();

let dataDir: string | undefined;

before(async () => {
  second = await startBuildkitd();
  // The worker's storage is the API's directory, through a wrapper that can fail one put.
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-provenance-'));
  const real = new LocalDirStorage({
    root: path.join(dataDir, 'objects'),
    publicBaseUrl: 'http://127.0.0.1',
    signingKey: 'k'.repeat(40),
  });
  const storage = Object.assign(Object.create(real) as LocalDirStorage, {
    put: (key: string, body: Readable, opts?: PutOptions) => {
      if (!failingPuts.delete(key)) return real.put(key, body, opts);
      body.resume();
      return Promise.reject(new Error(`injected: storage refused ${key}`));
    },
  });
  // Concurrency 1 each: two builds submitted together run on the two daemons.
  kiln = await startTestKiln({
    worker: true,
    env: { KILN_BUILDERS: `${BUILDKITD}=1,${second.address}=1`, KILN_DATA_DIR: dataDir },
    workerDeps: { storage },
  });
  client = apiClient(kiln.url, kiln.token);
  const ctx = await busyboxContext(DOCKERFILE, { 'notes.txt': 'notes\n' });
  context = await tgz(ctx.dir);
  await ctx.cleanup();
});

after(async () => {
  await kiln?.stop();
  await second?.cleanup();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

const build = async (query: string): Promise<View> => {
  const b = await client.submit(context, `network=none&output=type=tar,dest=app.tar&${query}`);
  return (await client.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 120_000)) as unknown as View;
};

describe('provenance', () => {
  test('provenance=max: in the artifact, kept by Kiln, served by its own signed URL', async () => {
    const b = await build('provenance=max');
    assert.equal(b.status, 'succeeded', JSON.stringify(b.error));
    assert.ok(b.artifact && b.provenance, JSON.stringify(b));
    assert.equal(b.provenance.mode, 'max');
    assert.equal(b.links.provenance, `${kiln.url}/v1/builds/${b.id}/provenance`);

    const inArtifact = (await readTarEntries(await download(b.artifact.url))).find(
      (e) => e.name === 'provenance.json',
    );
    assert.ok(inArtifact, 'the tar exporter wrote provenance.json');
    const kept = await download(b.provenance.url);
    assert.equal(sha256(kept), inArtifact.sha256, "Kiln's copy is the statement in the artifact");
    const statement = JSON.parse(kept.toString()) as { predicateType: string; predicate: unknown };
    assert.match(statement.predicateType, /^https:\/\/slsa\.dev\/provenance\//);
    // mode=max records the build's definition: the Dockerfile's RUN appears in it.
    assert.match(JSON.stringify(statement.predicate), /mkdir -p \/out/);

    const redirect = await client.api(`/v1/builds/${b.id}/provenance`);
    assert.equal(redirect.status, 302);
    const location = redirect.headers.get('location') ?? '';
    assert.equal(sha256(await download(location)), sha256(kept));
    const tampered = new URL(location);
    const sig = [...tampered.searchParams.keys()].find((k) => /sig/i.test(k));
    assert.ok(sig, `a signature parameter in ${location}`);
    tampered.searchParams.set(sig, `${tampered.searchParams.get(sig)?.slice(0, -2)}xx`);
    const refused = await fetch(tampered);
    assert.ok(refused.status === 403 || refused.status === 401, `tampered URL answered ${refused.status}`);
  });

  test('storing the provenance fails on attempt 1: its artifact goes too; attempt 2 keeps its own', async () => {
    const b = await client.submit(context, 'network=none&output=type=tar,dest=p.tar&provenance=min');
    failingPuts.add(`artifacts/${b.id}/1/p.tar.provenance.json`);
    const done = (await client.waitFor(
      b.id,
      ['succeeded', 'failed', 'canceled'],
      120_000,
    )) as unknown as View;
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(failingPuts.size, 0, 'the put failed once');
    const stored: string[] = [];
    for await (const o of kiln.deps.storage.list(`artifacts/${b.id}/`)) stored.push(o.key);
    assert.deepEqual(stored.sort(), [
      `artifacts/${b.id}/2/p.tar`,
      `artifacts/${b.id}/2/p.tar.provenance.json`,
    ]);
  });

  test('a build without provenance has none, and the route says why', async () => {
    const b = await build('');
    assert.equal(b.status, 'succeeded');
    assert.equal(b.provenance, undefined);
    assert.equal(b.links.provenance, undefined);
    const entries = await readTarEntries(await download(b.artifact?.url ?? ''));
    assert.equal(
      entries.find((e) => e.name === 'provenance.json'),
      undefined,
    );
    const res = await client.api(`/v1/builds/${b.id}/provenance`);
    assert.equal(res.status, 409);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /no provenance/);
  });
});

describe('sourceDateEpoch', () => {
  /**
   * Two builds of the same spec, the second submitted 1.1 s after the first: it runs on the other
   * builder (the first holds its only slot), and its RUN step writes its files a second later.
   */
  async function pair(query: string): Promise<[View, View]> {
    const first = build(query);
    await sleep(1100);
    const [a, b] = await Promise.all([first, build(query)]);
    for (const v of [a, b]) assert.equal(v.status, 'succeeded', JSON.stringify(v.error));
    assert.notEqual(
      a.builder,
      b.builder,
      `the two builds ran on two different builders: ${JSON.stringify([a, b])}`,
    );
    return [a, b];
  }

  test('the same context and spec, no cache, two builders: the same sha256', async () => {
    const [a, b] = await pair('noCache=true&sourceDateEpoch=1700000000');
    assert.equal(a.artifact?.digest, b.artifact?.digest);
    const entries = await readTarEntries(await download(a.artifact?.url ?? ''));
    assert.ok(entries.length > 0);
    for (const e of entries) assert.equal(e.mtime, 1700000000, `mtime of ${e.name}`);
  });

  test('without it, the RUN step stamps its own time: the artifacts differ', async () => {
    const [a, b] = await pair('noCache=true');
    assert.notEqual(a.artifact?.digest, b.artifact?.digest);
  });
});
