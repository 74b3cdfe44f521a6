// Build secrets against a real dockerd: the session's Secrets service reaches `RUN --mount=type=secret`
// through both session transports, missing ids fail the way BuildKit reports them, and values
// never leak into errors or progress.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type BuildkitClient, connect, type Secrets, SolveError, type StatusEvent } from '../src/index.js';
import { busyboxPath, makeContext } from '../test-support/context.js';
import { readTarEntries } from '../test-support/tar-entries.js';
import { tarExport } from '../test-support/tar-export.js';

const run = promisify(execFile);
const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
const busybox = { content: await fs.readFile(busyboxPath()), mode: 0o755 };

/** Copies secret `id` to /out in the image; `required` makes a missing secret fail the RUN in BuildKit. */
function dockerfile(id: string, required = false): string {
  const script = `/bin/busybox cat /run/secrets/${id} > /out`;
  return `FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=${id}${required ? ',required=true' : ''} ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]\n`;
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * Solves `dockerfile` with `secrets` and returns the exported tar. no-cache: BuildKit's cache key
 * of a RUN does not include secret values, so a cached step would hide a secret that never arrived.
 */
async function solveWith(
  client: BuildkitClient,
  df: string,
  secrets: Secrets | undefined,
  events: StatusEvent[] = [],
): Promise<Buffer> {
  const ctx = await makeContext({ Dockerfile: df, busybox });
  const tar = tarExport();
  try {
    await client.solve(
      {
        frontend: 'dockerfile.v0',
        frontendAttrs: { 'force-network-mode': 'none', 'no-cache': '' },
        localDirs: { context: ctx.dir, dockerfile: ctx.dir },
        ...(secrets !== undefined ? { secrets } : {}),
        exports: [tar],
      },
      (e) => events.push(e),
    );
  } finally {
    await ctx.cleanup();
  }
  return tar.bytes();
}

async function outSha(tar: Buffer): Promise<string | undefined> {
  return (await readTarEntries(tar)).find((e) => e.name === 'out')?.sha256;
}

describe('build secrets against a real dockerd', () => {
  let client: BuildkitClient;
  before(async () => {
    client = await connect(`docker://${socket}`);
  });
  after(() => client.close());

  test('a secret reaches RUN --mount=type=secret (docker /session upgrade and Control.Session tunnel)', async () => {
    const value = `s3cr3t-${process.pid}-${Date.now()}\n`;
    const events: StatusEvent[] = [];
    const tar = await solveWith(
      client,
      dockerfile('token'),
      { token: value, other: Buffer.from('x') },
      events,
    );
    assert.equal(await outSha(tar), sha256(value));
    assert.ok(!JSON.stringify(events).includes(value.trim()), 'the value appears in progress events');

    const tunnelled = await connect(`docker://${socket}`, { sessionTransport: 'control' });
    try {
      const binary = Buffer.from([0, 1, 2, 0xff, 0x0a]);
      assert.equal(
        await outSha(await solveWith(tunnelled, dockerfile('bin'), { bin: binary })),
        sha256(binary),
      );
    } finally {
      await tunnelled.close();
    }
  });

  test('a provider function is asked by id; undefined means not found', async () => {
    const asked: string[] = [];
    const provider = async (id: string) => {
      asked.push(id);
      return id === 'dyn' ? 'from-provider' : undefined;
    };
    assert.equal(await outSha(await solveWith(client, dockerfile('dyn'), provider)), sha256('from-provider'));
    assert.deepEqual(asked, ['dyn']);
    await assert.rejects(solveWith(client, dockerfile('absent', true), provider), (err: Error) => {
      assert.ok(err instanceof SolveError, String(err));
      assert.match(err.message, /secret absent not found/);
      return true;
    });
  });

  test('a missing required secret fails with BuildKit message, whether or not secrets were given', async () => {
    for (const secrets of [{ present: 'p' }, undefined]) {
      await assert.rejects(solveWith(client, dockerfile('missing', true), secrets), (err: Error) => {
        assert.ok(err instanceof SolveError, String(err));
        assert.match(err.message, /secret missing not found/);
        assert.match(err.message, /RUN --mount=type=secret,id=missing/);
        return true;
      });
    }
  });

  test('a failing provider fails the build without its error text (which could quote a value)', async () => {
    const leaky: Secrets = () => {
      throw new Error('could not parse vault reply "hunter2-leak"');
    };
    await assert.rejects(solveWith(client, dockerfile('x', true), leaky), (err: Error) => {
      assert.ok(err instanceof SolveError, String(err));
      assert.ok(!err.message.includes('hunter2'), err.message);
      return true;
    });
  });

  test('bkctl --secret id=...,src=FILE and id=...,env=VAR', async () => {
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkctl-secret-'));
    const ctx = await makeContext({
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=f --mount=type=secret,id=e ["/bin/busybox", "sh", "-c", "/bin/busybox cat /run/secrets/f /run/secrets/e > /out"]\n`,
      busybox,
    });
    try {
      await fs.writeFile(path.join(work, 'secret.txt'), 'file-part;');
      const dest = path.join(work, 'out.tar');
      await run(
        process.execPath,
        [
          path.resolve(import.meta.dirname, '../bin/bkctl.js'),
          '--addr',
          `docker://${socket}`,
          'build',
          '--local',
          `context=${ctx.dir}`,
          '--local',
          `dockerfile=${ctx.dir}`,
          '--opt',
          'force-network-mode=none',
          '--opt',
          'no-cache=',
          '--secret',
          `id=f,src=${path.join(work, 'secret.txt')}`,
          '--secret',
          'id=e,env=BKCTL_TEST_SECRET',
          '--output',
          `type=tar,dest=${dest}`,
          '--progress',
          'quiet',
        ],
        { env: { ...process.env, BKCTL_TEST_SECRET: 'env-part' } },
      );
      assert.equal(await outSha(await fs.readFile(dest)), sha256('file-part;env-part'));
    } finally {
      await ctx.cleanup();
      await fs.rm(work, { recursive: true, force: true });
    }
  });
});
