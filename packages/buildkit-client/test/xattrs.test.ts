// Extended attributes handed in through `LocalDir.xattrsOf` reach the build as a local client
// reading them from disk sends them (docker build, buildctl), on both BuildKit generations; and
// none go with a symlink, which fsutil's receiver would follow on the daemon's host.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type BuildkitClient, connect } from '../src/index.js';
import { ctlBuild } from '../test-support/buildctl.js';
import { makeContext } from '../test-support/context.js';
import { dockerBuildTar } from '../test-support/docker.js';
import { compareTarEntries, readTarEntries } from '../test-support/tar-entries.js';

const run = promisify(execFile);
const dockerSocket = process.env.KILN_TEST_DOCKER_SOCK;
const buildkitdAddr = process.env.KILN_TEST_BUILDKITD_ADDR ?? '';
if (!dockerSocket || !buildkitdAddr)
  throw new Error('KILN_TEST_DOCKER_SOCK and KILN_TEST_BUILDKITD_ADDR are not set: run through `npm test`');

/**
 * What `setcap cap_net_bind_service+ep` writes. Sent, but no client's arrives: BuildKit's receiver
 * writes a file's data after its attributes, and the kernel drops a file capability on a write.
 */
const CAPABILITY = Buffer.from('0100000200040000000000000000000000000000', 'hex');
const ON_DISK: Record<string, Record<string, Buffer>> = {
  'bin/tool': { 'user.kiln.origin': Buffer.from('ctx'), 'security.capability': CAPABILITY },
  data: { 'user.kiln.dir': Buffer.from('d') },
  'data/plain.txt': {},
};

async function setXattrs(root: string, xattrs: Record<string, Record<string, Buffer>>): Promise<void> {
  for (const [rel, attrs] of Object.entries(xattrs)) {
    for (const [name, value] of Object.entries(attrs)) {
      await run('setfattr', ['-h', '-n', name, '-v', `0x${value.toString('hex')}`, path.join(root, rel)]);
    }
  }
}

/** The attribute names on a host path (getfattr, since Node has no call for it). */
async function xattrNames(file: string): Promise<string[]> {
  const { stdout } = await run('getfattr', ['--absolute-names', '-h', '-d', '-m', '-', file]);
  return stdout
    .split('\n')
    .filter((line) => line.includes('='))
    .map((line) => line.slice(0, line.indexOf('=')))
    .sort();
}

const generations = [
  { name: 'dockerd 20.10 (BuildKit 0.8) against docker build', address: `docker://${dockerSocket}` },
  { name: 'buildkitd v0.24.0 against buildctl', address: buildkitdAddr },
];

describe('extended attributes of a local context', () => {
  let work: string;
  const clients: BuildkitClient[] = [];
  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-xattrs-'));
  });
  after(async () => {
    for (const c of clients) await c.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  const solveTar = async (
    address: string,
    dir: string,
    xattrsOf: (p: string) => Record<string, Buffer> | undefined,
    dest: string,
  ) => {
    const client = await connect(address);
    clients.push(client);
    await client.solve({
      frontend: 'dockerfile.v0',
      frontendAttrs: { 'no-cache': '', 'force-network-mode': 'none' },
      localDirs: { context: { path: dir, xattrsOf }, dockerfile: dir },
      exports: [{ type: 'tar', output: createWriteStream(dest) }],
    });
  };

  for (const g of generations) {
    describe(g.name, () => {
      test('xattrsOf gives the same artifact as the reference client reading them from disk', async () => {
        const ctx = await makeContext({
          Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
          'bin/tool': { content: 'tool', mode: 0o755 },
          'data/plain.txt': 'plain',
        });
        try {
          await setXattrs(ctx.dir, ON_DISK);
          const reference = path.join(work, 'reference.tar');
          const mine = path.join(work, 'mine.tar');
          if (g.address.startsWith('docker://')) {
            await dockerBuildTar({
              socket: dockerSocket,
              contextDir: ctx.dir,
              noCache: true,
              dest: reference,
            });
          } else {
            const r = await ctlBuild('buildctl', {
              addr: g.address,
              contextDir: ctx.dir,
              dockerfileDir: ctx.dir,
              opts: { 'no-cache': '' },
              dest: reference,
            });
            assert.equal(r.code, 0, r.stderr);
          }
          await solveTar(g.address, ctx.dir, (p) => ON_DISK[p], mine);
          const expected = await readTarEntries(reference);
          const xattrsIn = (entries: typeof expected) =>
            Object.fromEntries(entries.filter((e) => e.xattrs.length > 0).map((e) => [e.name, e.xattrs]));
          // The reference carries them: the comparison below is not of two empty lists.
          assert.deepEqual(xattrsIn(expected), {
            'ctx/bin/tool': ['user.kiln.origin=ctx'],
            'ctx/data': ['user.kiln.dir=d'],
          });
          assert.deepEqual(
            compareTarEntries(expected, await readTarEntries(mine), { compareMtime: true }),
            [],
          );
        } finally {
          await ctx.cleanup();
        }
      });

      test('no attribute goes with a symlink, whose target on the daemon host stays untouched', async () => {
        const target = path.join(work, `host-file-${g.address.startsWith('docker') ? 'docker' : 'bk'}`);
        await fs.writeFile(target, 'the host file');
        // The host's file system takes user attributes, or the check below could not fail.
        await run('setfattr', ['-n', 'user.kiln.probe', '-v', '1', target]);
        await run('setfattr', ['-x', 'user.kiln.probe', target]);
        const ctx = await makeContext({
          Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
          f: 'f',
          link: { symlink: target },
        });
        try {
          const dest = path.join(work, 'symlink.tar');
          await solveTar(g.address, ctx.dir, () => ({ 'user.kiln.pwned': Buffer.from('1') }), dest);
          const entries = await readTarEntries(dest);
          const link = entries.find((e) => e.name === 'ctx/link');
          assert.equal(link?.linkname, target);
          assert.deepEqual(link?.xattrs, []);
          // The regular file beside it did get the attribute: the hook was asked.
          assert.deepEqual(entries.find((e) => e.name === 'ctx/f')?.xattrs, ['user.kiln.pwned=1']);
          assert.deepEqual(await xattrNames(target), []);
        } finally {
          await ctx.cleanup();
        }
      });
    });
  }
});
