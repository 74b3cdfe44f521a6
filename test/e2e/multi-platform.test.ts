// Several platforms in one request, on buildkitd v0.24.0 (KILN_TEST_BUILDKITD_ADDR): linux/amd64
// and linux/386 where the machine runs 32-bit x86 programs, else linux/amd64 and linux/amd64/v2
// (see reportedPlatforms). One artifact in BuildKit's per-platform layout (a directory per
// platform, each with the RUN's own output), provenance kept per platform, and a platform list no
// builder serves whole refused at POST.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { reportedPlatforms } from '../support/generations.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import {
  type ApiClient,
  apiClient,
  busyboxContext,
  download,
  RUN,
  sha256,
  tgz,
} from '../support/processes.js';

const BUILDKITD = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!BUILDKITD) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');

// The RUN writes the platform BuildKit gives the stage, so each directory shows whose it is.
const DOCKERFILE = [
  'FROM scratch',
  'ARG TARGETPLATFORM',
  'COPY busybox /bin/busybox',
  RUN('/bin/busybox mkdir -p /out && echo "$TARGETPLATFORM" > /out/platform.txt'),
  '',
].join('\n');

interface View {
  id: string;
  status: string;
  platform: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string };
  provenance?: { url: string };
}

let kiln: TestKiln;
let client: ApiClient;
let context: Buffer;

before(async () => {
  kiln = await startTestKiln({ worker: true, env: { KILN_BUILDERS: BUILDKITD } });
  client = apiClient(kiln.url, kiln.token);
  const ctx = await busyboxContext(DOCKERFILE);
  context = await tgz(ctx.dir);
  await ctx.cleanup();
});

after(async () => {
  await kiln?.stop();
});

describe('multi-platform', () => {
  test('two platforms: one artifact, a directory per platform, provenance for each', async () => {
    const reported = await reportedPlatforms(BUILDKITD);
    const second = reported.includes('linux/386') ? 'linux/386' : 'linux/amd64/v2';
    assert.ok(
      reported.includes(second),
      `buildkitd reports neither linux/386 nor linux/amd64/v2: ${reported}`,
    );
    const platforms = ['linux/amd64', second];
    const submitted = await client.submit(
      context,
      `network=none&output=type=tar,dest=app.tar&platform=${encodeURIComponent(platforms.join(','))}&provenance=min`,
    );
    const b = (await client.waitFor(submitted.id, ['succeeded', 'failed'], 120_000)) as unknown as View;
    assert.equal(b.status, 'succeeded', JSON.stringify(b.error));
    assert.equal(b.platform, platforms.join(','));
    const entries = await readTarEntries(await download(b.artifact?.url ?? ''));
    const digestOf = (name: string) => entries.find((e) => e.name === name)?.sha256;
    const dirs = platforms.map((p) => p.replaceAll('/', '_'));
    for (const [i, p] of platforms.entries()) {
      assert.equal(digestOf(`${dirs[i]}/out/platform.txt`), sha256(`${p}\n`), p);
      assert.ok(
        entries.some((e) => e.name === `${dirs[i]}/provenance.json`),
        p,
      );
    }

    const kept = JSON.parse((await download(b.provenance?.url ?? '')).toString()) as Record<
      string,
      { predicateType: string }
    >;
    assert.deepEqual(Object.keys(kept).sort(), [...dirs].sort());
    for (const statement of Object.values(kept))
      assert.match(statement.predicateType, /slsa\.dev\/provenance/);
  });

  test('a platform list no builder serves whole is refused at POST, naming what is missing', async () => {
    const res = await client.api(
      `/v1/builds?output=type=tar,dest=a.tar&platform=${encodeURIComponent('linux/amd64,linux/s390x')}`,
      { method: 'POST', body: context, headers: { 'content-type': 'application/gzip' } },
    );
    assert.equal(res.status, 422, await res.clone().text());
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'no_capable_builder');
    assert.match(body.error.message, /linux\/s390x/);
  });

  test('more than 8 platforms, or a malformed one, is an invalid spec', async () => {
    for (const platform of [
      'linux/amd64,amd64',
      Array.from({ length: 9 }, (_, i) => `linux/arch${i}`).join(','),
    ]) {
      const res = await client.api(`/v1/builds?platform=${encodeURIComponent(platform)}`, {
        method: 'POST',
        body: context,
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(res.status, 400, platform);
    }
  });
});
