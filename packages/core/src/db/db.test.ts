import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import {
  createPrismaClient,
  defaultMigrationsDir,
  migrateDatabase,
  Prisma,
  type PrismaClient,
} from './index.js';
import { readMigrations } from './migrate.js';

const BASE_URL = process.env.KILN_TEST_DATABASE_URL;
if (!BASE_URL) {
  throw new Error(
    'KILN_TEST_DATABASE_URL is not set: it must point at a PostgreSQL server on which the tests may ' +
      'create and drop databases, e.g. run `bash scripts/lib/postgres.sh start /tmp/kiln-pg 55432` and set ' +
      'KILN_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:55432/kiln',
  );
}
const baseUrl: string = BASE_URL;

// Every test gets databases of its own (kiln_test_<random>), dropped at the end, so the file
// can run repeatedly and alongside other runs against the same server.
const created: string[] = [];

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function createTestDatabase(): Promise<string> {
  const name = `kiln_test_${randomBytes(6).toString('hex')}`;
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  created.push(name);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

after(async () => {
  await withAdmin(async (c) => {
    for (const name of created) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
});

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function migrationNames(): Promise<string[]> {
  return (await readMigrations(defaultMigrationsDir())).map((m) => m.name);
}

describe('migrateDatabase', () => {
  let migratedUrl = '';

  test('applies every migration once; running it again is a no-op', async () => {
    const url = await createTestDatabase();
    const names = await migrationNames();
    const logged: string[] = [];
    const logger = { info: (m: string) => logged.push(m), warn: (m: string) => logged.push(`WARN ${m}`) };

    const first = await migrateDatabase(url, logger);
    assert.deepEqual(first.applied, names);
    assert.ok(
      logged.some((m) => m.includes(names[0] ?? '?')),
      `logged: ${logged.join('\n')}`,
    );

    logged.length = 0;
    const second = await migrateDatabase(url, logger);
    assert.deepEqual(second.applied, []);
    assert.deepEqual(logged, []);

    const rows = await query<{
      migration_name: string;
      finished_at: Date | null;
      applied_steps_count: number;
    }>(
      url,
      'SELECT migration_name, finished_at, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
    );
    assert.deepEqual(
      rows.map((r) => r.migration_name),
      names,
    );
    assert.ok(rows.every((r) => r.finished_at instanceof Date && r.applied_steps_count === 1));
    const tables = await query<{ tablename: string }>(
      url,
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    );
    for (const t of ['ApiToken', 'Build', 'BuildAttempt', 'Project']) {
      assert.ok(
        tables.some((r) => r.tablename === t),
        `table ${t} missing`,
      );
    }
    migratedUrl = url;
  });

  test('two concurrent runs do not conflict and apply each migration once', async () => {
    const url = await createTestDatabase();
    const names = await migrationNames();
    const [a, b] = await Promise.all([migrateDatabase(url), migrateDatabase(url)]);
    // The advisory lock serializes them: one does the work, the other finds it done.
    assert.deepEqual([...a.applied, ...b.applied], names);
    assert.ok(a.applied.length === 0 || b.applied.length === 0);
    const rows = await query<{ n: string }>(url, 'SELECT count(*) AS n FROM _prisma_migrations');
    assert.equal(Number(rows[0]?.n), names.length);
  });

  test('a failing migration rolls back the whole run and records nothing', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-migrations-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await cp(defaultMigrationsDir(), dir, { recursive: true });
    await mkdir(path.join(dir, '99990101000000_broken'));
    await writeFile(
      path.join(dir, '99990101000000_broken', 'migration.sql'),
      'CREATE TABLE "Fine" (x int);\nSELECT no_such_column FROM "Project";\n',
    );
    const url = await createTestDatabase();

    await assert.rejects(migrateDatabase(url, undefined, { migrationsDir: dir }), (err: Error) => {
      assert.match(err.message, /migration 99990101000000_broken failed/);
      assert.match(err.message, /no_such_column/);
      return true;
    });
    const tables = await query<{ tablename: string }>(
      url,
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    );
    assert.deepEqual(
      tables,
      [],
      'earlier migrations of the run and the bookkeeping table are rolled back too',
    );

    // The next start, with the broken migration gone, succeeds from scratch.
    await rm(path.join(dir, '99990101000000_broken'), { recursive: true });
    assert.deepEqual(
      (await migrateDatabase(url, undefined, { migrationsDir: dir })).applied,
      await migrationNames(),
    );
  });

  test('the Prisma CLI agrees the database is up to date (same table format and checksums)', async () => {
    assert.ok(migratedUrl, 'depends on the first test');
    const root = path.resolve(defaultMigrationsDir(), '../..');
    const cli = path.join(
      path.dirname(createRequire(import.meta.url).resolve('prisma/package.json')),
      'build/index.js',
    );
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'migrate', 'status'], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: migratedUrl, CHECKPOINT_DISABLE: '1' },
      timeout: 120_000,
    });
    assert.match(stdout, /Database schema is up to date/);
  });
});

describe('Prisma client memory', () => {
  // The generated client used to import its query compiler from a module holding the wasm as a
  // 2.5 MB base64 literal, which stayed in the heap for the process's life (5 MiB of V8 heap).
  // packages/core/scripts/prisma-compiler-wasm.mjs makes it read a .wasm file instead; this
  // runs a real query in a child process and records every module it resolves.
  test('the client compiles its query compiler from a file: no module holding the base64 text is loaded', async () => {
    const url = await createTestDatabase();
    await migrateDatabase(url);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-prisma-wasm-'));
    try {
      const seen = path.join(dir, 'resolved.txt');
      const hooks = path.join(dir, 'hooks.mjs');
      await writeFile(
        hooks,
        `import fs from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  fs.appendFileSync(${JSON.stringify(seen)}, r.url + '\\n');
  return r;
}`,
      );
      const script = `
import { register } from 'node:module';
register(${JSON.stringify(pathToFileURL(hooks).href)});
const { createPrismaClient } = await import(${JSON.stringify(pathToFileURL(path.join(import.meta.dirname, 'index.ts')).href)});
const prisma = createPrismaClient(process.env.URL);
console.log(JSON.stringify(await prisma.project.count()));
await prisma.$disconnect();`;
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        { env: { ...process.env, URL: url }, timeout: 60_000 },
      );
      assert.equal(stdout.trim(), '0');
      const urls = (await readFile(seen, 'utf8')).split('\n');
      assert.ok(
        urls.some((u) => u.includes('@prisma/client/runtime/query_compiler_bg.postgresql.mjs')),
        'the query compiler runtime was loaded (so the hook saw the client at work)',
      );
      assert.deepEqual(
        urls.filter((u) => u.includes('wasm-base64')),
        [],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('Prisma client', () => {
  let prisma: PrismaClient;

  before(async () => {
    const url = await createTestDatabase();
    await migrateDatabase(url);
    prisma = createPrismaClient(url, { maxConnections: 4 });
  });
  after(async () => {
    await prisma?.$disconnect();
  });

  function buildData(projectId: string, extra: Partial<Prisma.BuildUncheckedCreateInput> = {}) {
    return {
      projectId,
      spec: { output: { type: 'tar', dest: 'app.tar' }, file: 'Dockerfile', buildArgs: { A: '1' } },
      contextDigest: `sha256:${'a'.repeat(64)}`,
      contextSize: 1234n,
      contextKey: `contexts/sha256/${'a'.repeat(64)}.tar`,
      ...extra,
    } satisfies Prisma.BuildUncheckedCreateInput;
  }

  test('creates a project, a token and a build with attempts', async () => {
    const project = await prisma.project.create({ data: { name: 'demo' } });
    assert.match(project.id, /^[0-9A-HJKMNP-TV-Z]{26}$/, 'ids default to ULIDs');
    assert.ok(project.createdAt instanceof Date);

    const secret = randomBytes(32).toString('base64url');
    const tokenHash = createHash('sha256').update(secret).digest('hex');
    await prisma.apiToken.create({ data: { projectId: project.id, name: 'ci', tokenHash } });
    const token = await prisma.apiToken.findUnique({ where: { tokenHash }, include: { project: true } });
    assert.equal(token?.project.name, 'demo');
    assert.equal(token?.revokedAt, null);
    await prisma.apiToken.update({ where: { tokenHash }, data: { lastUsedAt: new Date() } });

    const build = await prisma.build.create({ data: buildData(project.id) });
    assert.equal(build.status, 'queued');
    assert.equal(build.attempts, 0);
    assert.deepEqual(build.spec, buildData(project.id).spec);
    // ULIDs start with a millisecond timestamp, so they sort by creation time.
    assert.ok(build.id.slice(0, 10) >= project.id.slice(0, 10));

    const running = await prisma.build.update({
      where: { id: build.id },
      data: {
        status: 'running',
        builder: 'tcp://buildkitd-1:1234',
        startedAt: new Date(),
        attempts: { increment: 1 },
        buildAttempts: { create: { number: 1, builder: 'tcp://buildkitd-1:1234' } },
      },
      include: { buildAttempts: true },
    });
    assert.equal(running.status, 'running');
    assert.equal(running.attempts, 1);
    assert.equal(running.buildAttempts.length, 1);
    assert.equal(running.buildAttempts[0]?.outcome, null);

    const listed = await prisma.build.findMany({
      where: { projectId: project.id, status: { in: ['queued', 'running'] } },
      orderBy: { createdAt: 'desc' },
    });
    assert.deepEqual(
      listed.map((b) => b.id),
      [build.id],
    );
  });

  test('project names and token hashes are unique', async () => {
    const project = await prisma.project.create({ data: { name: 'unique-name' } });
    await assert.rejects(prisma.project.create({ data: { name: 'unique-name' } }), isUniqueViolation);
    await prisma.apiToken.create({ data: { projectId: project.id, name: 'a', tokenHash: 'f'.repeat(64) } });
    await assert.rejects(
      prisma.apiToken.create({ data: { projectId: project.id, name: 'b', tokenHash: 'f'.repeat(64) } }),
      isUniqueViolation,
    );
  });

  test('an idempotency key is unique per project', async () => {
    const p1 = await prisma.project.create({ data: { name: 'idem-1' } });
    const p2 = await prisma.project.create({ data: { name: 'idem-2' } });
    const first = await prisma.build.create({
      data: buildData(p1.id, { idempotencyKey: 'key-1', requestHash: 'h1' }),
    });
    await assert.rejects(
      prisma.build.create({ data: buildData(p1.id, { idempotencyKey: 'key-1', requestHash: 'h1' }) }),
      isUniqueViolation,
    );
    // The same key in another project, and builds without a key (NULLs are distinct).
    await prisma.build.create({ data: buildData(p2.id, { idempotencyKey: 'key-1' }) });
    await prisma.build.create({ data: buildData(p1.id) });
    await prisma.build.create({ data: buildData(p1.id) });

    const found = await prisma.build.findUnique({
      where: { projectId_idempotencyKey: { projectId: p1.id, idempotencyKey: 'key-1' } },
    });
    assert.equal(found?.id, first.id);
    assert.equal(found?.requestHash, 'h1');
  });

  test('BigInt sizes round-trip beyond 2^53', async () => {
    const project = await prisma.project.create({ data: { name: 'sizes' } });
    const contextSize = 2n ** 53n + 1n;
    const artifactSize = 2n ** 63n - 1n; // the largest BIGINT
    const build = await prisma.build.create({ data: buildData(project.id, { contextSize }) });
    await prisma.build.update({
      where: { id: build.id },
      data: { status: 'succeeded', finishedAt: new Date(), artifactSize, artifactKey: 'artifacts/x.tar' },
    });
    const read = await prisma.build.findUniqueOrThrow({ where: { id: build.id } });
    assert.equal(typeof read.contextSize, 'bigint');
    assert.equal(read.contextSize, contextSize);
    assert.equal(read.artifactSize, artifactSize);
    const big = await prisma.build.count({
      where: { projectId: project.id, contextSize: { gt: 2n ** 53n } },
    });
    assert.equal(big, 1);
    const sum = await prisma.build.aggregate({
      where: { projectId: project.id },
      _sum: { contextSize: true },
    });
    assert.equal(sum._sum.contextSize, contextSize);
  });
});

function isUniqueViolation(err: unknown): boolean {
  assert.ok(err instanceof Prisma.PrismaClientKnownRequestError, `not a known request error: ${String(err)}`);
  assert.equal(err.code, 'P2002');
  return true;
}
