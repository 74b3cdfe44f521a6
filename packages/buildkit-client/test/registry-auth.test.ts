// Registry credentials over the session's Auth service, against buildkitd v0.24.0
// (KILN_TEST_BUILDKITD_ADDR) and a private registry with basic auth on loopback
// (scripts/lib/registry.sh): a push with the right credentials lands the manifest the daemon
// reports; wrong or missing credentials fail the solve with the registry's refusal, and the
// provider is asked only for the host being pushed to.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type BuildkitClient, connect, type RegistryAuth, SolveError } from '../src/index.js';
import { makeContext } from '../test-support/context.js';
import { startRegistry, type TestRegistry } from '../test-support/registry.js';

const address = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!address) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');
const USER = 'builder';
const PASSWORD = `pw-${process.pid}-${Date.now()}`;

let reg: TestRegistry;
let registry: string;
let client: BuildkitClient;
let context: Awaited<ReturnType<typeof makeContext>>;

before(async () => {
  reg = await startRegistry(USER, PASSWORD);
  registry = reg.host;
  client = await connect(address);
  context = await makeContext({
    Dockerfile: 'FROM scratch\nCOPY hello.txt /hello.txt\n',
    'hello.txt': `hi ${PASSWORD}\n`,
  });
});

after(async () => {
  client?.close();
  await context?.cleanup();
  await reg?.stop();
});

async function push(repo: string, registryAuth?: RegistryAuth) {
  return client.solve({
    frontend: 'dockerfile.v0',
    frontendAttrs: { 'no-cache': '' },
    localDirs: { context: context.dir, dockerfile: context.dir },
    exports: [
      { type: 'image', attrs: { name: `${registry}/${repo}:v1`, push: 'true', 'registry.insecure': 'true' } },
    ],
    ...(registryAuth ? { registryAuth } : {}),
  });
}

const manifestDigest = (repo: string) => reg.manifestDigest(repo);

describe('registry credentials through the session', () => {
  test('the right credentials: pushed, and the registry holds the digest BuildKit reports', async () => {
    const asked: string[] = [];
    const result = await push('team/app', (host) => {
      asked.push(host);
      return host === registry ? { username: USER, secret: PASSWORD } : undefined;
    });
    const digest = result.exporterResponse['containerimage.digest'];
    assert.match(digest ?? '', /^sha256:[0-9a-f]{64}$/);
    assert.equal(await manifestDigest('team/app'), digest);
    assert.ok(asked.length > 0, 'BuildKit asked for credentials');
    assert.deepEqual([...new Set(asked)], [registry]);
  });

  for (const [name, auth] of [
    ['no Auth service', undefined],
    ['a wrong password', () => ({ username: USER, secret: 'wrong' })],
    ['anonymous (provider has none)', () => undefined],
  ] as const) {
    test(`${name}: the solve fails with the registry's refusal, nothing pushed`, async () => {
      const repo = `team/${name
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, '-')
        .replace(/-$/, '')}`;
      await assert.rejects(push(repo, auth), (err: unknown) => {
        assert.ok(err instanceof SolveError, String(err));
        assert.match(err.message, /401|unauthorized|authorization/i);
        assert.ok(!err.message.includes(PASSWORD));
        return true;
      });
      assert.equal(await manifestDigest(repo), null);
    });
  }

  test('a provider that throws: the solve fails naming the host, not the error text', async () => {
    await assert.rejects(
      push('team/throws', () => {
        throw new Error(`vault said ${PASSWORD}`);
      }),
      (err: unknown) => err instanceof SolveError && !err.message.includes(PASSWORD),
    );
  });
});
