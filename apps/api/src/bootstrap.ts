import { parseArgs } from 'node:util';
import { createPrismaClient, issueToken, migrateDatabase } from '@kiln/core';

/**
 * `node apps/api/dist/bootstrap.js --project NAME [--token-name N]`: creates the project if
 * needed and prints a new `manage` API token (only its hash is stored). Reads DATABASE_URL.
 */
export async function bootstrapProject(
  databaseUrl: string,
  project: string,
  tokenName = 'bootstrap',
): Promise<string> {
  await migrateDatabase(databaseUrl);
  const db = createPrismaClient(databaseUrl);
  try {
    const p = await db.project.upsert({ where: { name: project }, create: { name: project }, update: {} });
    return (await issueToken(db, { projectId: p.id, name: tokenName, scope: 'manage' })).token;
  } finally {
    await db.$disconnect();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: { project: { type: 'string', default: 'default' }, 'token-name': { type: 'string' } },
  });
  const url = process.env.DATABASE_URL;
  if (!url) {
    process.stderr.write('DATABASE_URL: not set\n');
    process.exit(1);
  }
  process.stdout.write(`KILN_TOKEN=${await bootstrapProject(url, values.project, values['token-name'])}\n`);
}
