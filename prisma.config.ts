/**
 * Prisma CLI configuration. It exists so that the CLI never needs a native engine (this
 * machine, like CI, cannot download one):
 * - `prisma generate` uses the generator `prisma-client` with `engineType = "client"`
 *   (schema.prisma), whose query compiler is wasm shipped in the npm packages.
 * - Commands that talk to a database (`migrate dev|diff|status`, `db pull`) run the wasm
 *   schema engine (`engine: 'js'`) over @prisma/adapter-pg, via the shim in
 *   prisma/migration-adapter.ts.
 * Keep `url = env("DATABASE_URL")` in the datasource: without a url the CLI falls back to
 * downloading engines. DATABASE_URL must be set for commands that connect; generate needs
 * none (see below).
 *
 * Note: with a config file present, the CLI does not read .env files.
 */
import { defineConfig } from 'prisma/config';
import { createMigrationAdapter } from './prisma/migration-adapter.ts';

// The CLI reads the schema's env("DATABASE_URL") before any command (generate included) and,
// when that fails, assumes the native query engine and tries to download it. A placeholder
// keeps `prisma generate` working without a database; adapter() still demands a real URL.
const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) process.env.DATABASE_URL = 'postgresql://database-url-not-set.invalid/kiln';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  experimental: { adapter: true },
  engine: 'js',
  // Called only by commands that connect, so `prisma generate` works without a database.
  async adapter() {
    if (!databaseUrl)
      throw new Error('DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/kiln)');
    return createMigrationAdapter(databaseUrl);
  },
});
