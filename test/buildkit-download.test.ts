// The last place scripts/lib/buildkitd.sh looks for buildkitd is BuildKit's release tarball,
// checked against a pinned sha256. The release directory is served here from loopback (the
// layout of BuildKit's releases), so the check itself is what is tested, with no internet.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../scripts/lib/buildkitd.sh', import.meta.url));
const arch = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
/** v0.24.0's release tarball for this machine's architecture: its sha256, as scripts/lib/buildkitd.sh pins it. */
const PINNED_V0_24_0 = (
  {
    amd64: 'af8064eca16077b4d6937745988ba2d2dfa439540874cdcd918318315f3ba1d3',
    arm64: '38dc4433d220bb43c198df2070e49d5dde5ed44ee31fb80d6b13722eec21d4ea',
  } as Record<string, string>
)[arch];

const work = mkdtempSync(path.join(tmpdir(), 'kiln-bk-download-'));
let releases = '';
const served: string[] = [];
const server = createServer((req, res) => {
  served.push(req.url ?? '');
  const file = path.join(work, 'releases', decodeURIComponent(req.url ?? '/'));
  if (!file.startsWith(path.join(work, 'releases')) || !existsSync(file)) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200).end(readFileSync(file));
});

// A release tarball as BuildKit lays it out: bin/buildkitd and bin/buildctl.
function release(version: string, body: string): string {
  const tree = path.join(work, `tree-${version}`);
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  for (const name of ['buildkitd', 'buildctl']) {
    writeFileSync(path.join(tree, 'bin', name), `#!/bin/sh\necho ${name} ${body}\n`);
    chmodSync(path.join(tree, 'bin', name), 0o755);
  }
  const dir = path.join(work, 'releases', version);
  mkdirSync(dir, { recursive: true });
  const tarball = path.join(dir, `buildkit-${version}.linux-${arch}.tar.gz`);
  execFileSync('tar', ['-czf', tarball, '-C', tree, 'bin']);
  return createHash('sha256').update(readFileSync(tarball)).digest('hex');
}

function download(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, 'download'], {
      env: { PATH: process.env.PATH ?? '', HOME: work, KILN_BUILDKIT_RELEASES: releases, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  releases = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.close();
  rmSync(work, { recursive: true, force: true });
});

test('v0.24.0 is pinned: a tarball whose sha256 is not the pin is refused and nothing is kept', async () => {
  release('v0.24.0', 'not the release');
  const cache = path.join(work, 'cache-pinned');
  const r = await download({ KILN_BUILDKIT_CACHE: cache });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  if (PINNED_V0_24_0) {
    assert.match(
      r.stderr,
      new RegExp(
        `sha256 of \\S+/v0\\.24\\.0/buildkit-v0\\.24\\.0\\.linux-${arch}\\.tar\\.gz is not ${PINNED_V0_24_0}`,
      ),
    );
    assert.ok(served.includes(`/v0.24.0/buildkit-v0.24.0.linux-${arch}.tar.gz`));
  } else {
    assert.match(r.stderr, /no sha256 is pinned for v0\.24\.0/);
  }
  assert.ok(!existsSync(path.join(cache, 'bin')), 'nothing unpacked');
  assert.ok(
    !existsSync(path.join(cache, 'release.tar.gz')) && !existsSync(path.join(cache, 'release.tar.gz.part')),
  );
});

test('a version with no pin needs KILN_BUILDKIT_SHA256 and downloads nothing without it', async () => {
  const before = served.length;
  const r = await download({
    KILN_BUILDKIT_VERSION: 'v0.99.0',
    KILN_BUILDKIT_CACHE: path.join(work, 'cache-unpinned'),
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no sha256 is pinned for v0\.99\.0 linux-\S+; .*set KILN_BUILDKIT_SHA256/);
  assert.equal(served.length, before, 'nothing was fetched');
});

test('with the matching sha256 the release is unpacked once, then used from the cache', async () => {
  const sha = release('v0.98.0', 'from the release');
  const cache = path.join(work, 'cache-ok');
  const env = { KILN_BUILDKIT_VERSION: 'v0.98.0', KILN_BUILDKIT_SHA256: sha, KILN_BUILDKIT_CACHE: cache };
  const first = await download(env);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trim(), path.join(cache, 'bin'));
  assert.equal(
    execFileSync(path.join(cache, 'bin', 'buildkitd'), { encoding: 'utf8' }),
    'buildkitd from the release\n',
  );
  const fetched = served.length;
  const second = await download(env);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stdout.trim(), path.join(cache, 'bin'));
  assert.equal(served.length, fetched, 'the second call fetched nothing');
});

test('a wrong KILN_BUILDKIT_SHA256 refuses the download; a missing release says the download failed', async () => {
  release('v0.97.0', 'tampered');
  const wrong = await download({
    KILN_BUILDKIT_VERSION: 'v0.97.0',
    KILN_BUILDKIT_SHA256: '0'.repeat(64),
    KILN_BUILDKIT_CACHE: path.join(work, 'cache-wrong'),
  });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /is not 0{64}: not used/);
  assert.ok(!existsSync(path.join(work, 'cache-wrong', 'bin')));
  const missing = await download({
    KILN_BUILDKIT_VERSION: 'v0.96.0',
    KILN_BUILDKIT_SHA256: '0'.repeat(64),
    KILN_BUILDKIT_CACHE: path.join(work, 'cache-missing'),
  });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /download of \S+ failed/);
  assert.ok(!existsSync(path.join(work, 'cache-missing', 'release.tar.gz.part')));
});
