// Registry logins in PostgreSQL across a change of the credentials key: what a previous key
// sealed still serves builds, a worker's start seals it again under the current key, and a login
// no key opens is shown as unusable and left out of builds.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test-support/services.js';
import { credentialsKeysOf } from './credentials-keys.js';
import { createDatabase, type Database } from './db/index.js';
import { decryptSecret, RegistryCredentialStore } from './registry-credentials.js';

let testDb: TestDatabase;
let database: Database;
before(async () => {
  testDb = await createTestDatabase();
  database = createDatabase(testDb.url);
});
after(async () => {
  await database?.close();
  await testDb?.drop();
});

const OLD = 'o'.repeat(40);
const NEW = 'n'.repeat(40);
const login = (secret: string) => ({ username: 'ci', secret });

/** A project whose login to reg.example was set while OLD was the key. */
async function projectWithLoginUnderOld(name: string, secret: string): Promise<string> {
  const { id } = await database.prisma.project.create({ data: { name } });
  await new RegistryCredentialStore(database.prisma, credentialsKeysOf(OLD)).put(
    id,
    'reg.example',
    login(secret),
    50,
  );
  return id;
}

test('a key change with the old key listed: logins keep working and are sealed again at start', async () => {
  const { id: projectId } = await database.prisma.project.create({ data: { name: 'rotate' } });
  const before = new RegistryCredentialStore(database.prisma, credentialsKeysOf(OLD));
  await before.put(projectId, 'reg.example', login('tok-1'), 50);
  await before.put(projectId, 'other.example:5000', login('tok-2'), 50);
  const setAt = (await before.list(projectId)).map((v) => v.updatedAt.getTime());

  const rotated = new RegistryCredentialStore(database.prisma, credentialsKeysOf(NEW, [OLD]));
  const unread: string[] = [];
  const served = await rotated.forBuild(projectId, (host) => unread.push(host));
  assert.deepEqual(Object.fromEntries(served), {
    'other.example:5000': login('tok-2'),
    'reg.example': login('tok-1'),
  });
  assert.deepEqual(unread, []);
  assert.ok((await rotated.list(projectId)).every((v) => v.usable));

  assert.deepEqual(await rotated.resealStale(), { resealed: 2, unreadable: 0 });
  assert.deepEqual(await rotated.resealStale(), { resealed: 0, unreadable: 0 }, 'nothing left to seal');
  const rows = await database.prisma.registryCredential.findMany({
    where: { projectId },
    orderBy: { host: 'asc' },
  });
  for (const row of rows) {
    assert.equal(
      decryptSecret(credentialsKeysOf(NEW).current, projectId, row.host, row.secretCiphertext),
      row.host === 'reg.example' ? 'tok-1' : 'tok-2',
    );
  }
  assert.deepEqual(
    (await rotated.list(projectId)).map((v) => v.updatedAt.getTime()),
    setAt,
    'sealing again is not the owner setting the login',
  );

  // The old key can go now.
  const after = new RegistryCredentialStore(database.prisma, credentialsKeysOf(NEW));
  assert.equal((await after.forBuild(projectId, () => assert.fail('unreadable'))).size, 2);
});

test('a key change without the old key: the login is unusable, left out of builds, and set again mends it', async () => {
  const projectId = await projectWithLoginUnderOld('lost', 'tok-1');
  const store = new RegistryCredentialStore(database.prisma, credentialsKeysOf(NEW));
  assert.deepEqual(
    (await store.list(projectId)).map(({ host, usable }) => ({ host, usable })),
    [{ host: 'reg.example', usable: false }],
  );
  const unread: string[] = [];
  assert.equal((await store.forBuild(projectId, (host) => unread.push(host))).size, 0);
  assert.deepEqual(unread, ['reg.example']);
  const { resealed, unreadable } = await store.resealStale();
  assert.equal(resealed, 0);
  assert.ok(unreadable >= 1, 'counted, not sealed again (it cannot be opened)');

  await store.put(projectId, 'reg.example', login('tok-2'), 50);
  assert.deepEqual(
    (await store.list(projectId)).map(({ usable }) => usable),
    [true],
  );
  assert.deepEqual(Object.fromEntries(await store.forBuild(projectId, () => undefined)), {
    'reg.example': login('tok-2'),
  });
});

test('a login put while the pass seals again is kept, not overwritten with the old secret', async () => {
  const projectId = await projectWithLoginUnderOld('race', 'tok-old');
  const rotated = new RegistryCredentialStore(database.prisma, credentialsKeysOf(NEW, [OLD]));
  // The pass read the row, then the owner set a new secret before its update: the update's
  // condition on the ciphertext it read no longer holds.
  const original = database.prisma.registryCredential.findMany.bind(database.prisma.registryCredential);
  const prisma = Object.create(database.prisma) as typeof database.prisma;
  Object.defineProperty(prisma, 'registryCredential', {
    value: Object.assign(Object.create(database.prisma.registryCredential), {
      findMany: async (args: Parameters<typeof original>[0]) => {
        const rows = await original(args);
        await rotated.put(projectId, 'reg.example', login('tok-new'), 50);
        return rows;
      },
    }),
  });
  const racing = new RegistryCredentialStore(prisma, credentialsKeysOf(NEW, [OLD]));
  const { resealed } = await racing.resealStale();
  assert.equal(resealed, 0);
  const served = await rotated.forBuild(projectId, () => assert.fail('unreadable'));
  assert.equal(served.get('reg.example')?.secret, 'tok-new');
});
