import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BuildContext, busyboxPath, makeContext } from './context.js';
import { DockerBuildError, dockerBuildLocal, dockerBuildTar } from './docker.js';
import { readTarEntries } from './tar-entries.js';

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

// Set by scripts/test.sh, which starts two private daemons.
const socket = process.env.KILN_TEST_DOCKER_SOCK ?? '';
const socket2 = process.env.KILN_TEST_DOCKER_SOCK_2 ?? '';
const skip = socket === '' || socket2 === '' ? 'needs the private dockerds of `npm test`' : false;

// No /bin/sh in FROM scratch, hence the exec form.
const DOCKERFILE = `\
FROM scratch AS builder
COPY busybox /bin/busybox
ARG GREETING=hi
RUN ["/bin/busybox", "sh", "-c", "echo $GREETING > /out"]

FROM scratch
COPY --from=builder /out /out
`;

describe('docker build helpers', { skip }, () => {
  let context: BuildContext;
  let busybox: Buffer;

  before(async () => {
    busybox = await readFile(busyboxPath());
    context = await makeContext({
      busybox: { content: busybox, mode: 0o755 },
      Dockerfile: DOCKERFILE,
      'failing.Dockerfile':
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo oops >&2; exit 3"]\n',
    });
  });
  after(() => context.cleanup());

  test('dockerBuildTar exports the final stage', async () => {
    const dest = join(context.dir, 'out.tar');
    await dockerBuildTar({ socket, contextDir: context.dir, dest });
    const entries = await readTarEntries(dest);
    assert.deepEqual(
      entries.map(({ name, type, size, sha256 }) => ({ name, type, size, sha256 })),
      [{ name: 'out', type: 'file', size: 3, sha256: sha256('hi\n') }],
    );
  });

  test('dockerBuildTar honours target and build args', async () => {
    const dest = join(context.dir, 'builder.tar');
    await dockerBuildTar({
      socket,
      contextDir: context.dir,
      target: 'builder',
      buildArgs: { GREETING: 'hello' },
      dest,
    });
    const byName = new Map((await readTarEntries(dest)).map((entry) => [entry.name, entry]));
    assert.equal(byName.get('bin/busybox')?.sha256, sha256(busybox));
    assert.equal(byName.get('bin/busybox')?.mode, 0o755);
    assert.equal(byName.get('out')?.sha256, sha256('hello\n'));
  });

  test('dockerBuildLocal exports to a directory, on the second daemon too', async () => {
    for (const [i, sock] of [socket, socket2].entries()) {
      const dest = join(context.dir, `local-${i}`);
      await dockerBuildLocal({ socket: sock, contextDir: context.dir, dest });
      assert.equal(await readFile(join(dest, 'out'), 'utf8'), 'hi\n');
    }
  });

  test('a failing build rejects with the build log', async () => {
    await assert.rejects(
      dockerBuildTar({
        socket,
        contextDir: context.dir,
        dockerfile: 'failing.Dockerfile',
        dest: join(context.dir, 'never.tar'),
      }),
      (error: unknown) => {
        assert.ok(error instanceof DockerBuildError);
        assert.notEqual(error.exitCode, 0);
        assert.match(error.stderr, /oops/);
        return true;
      },
    );
  });
});
