// docker-compose.yml cannot run here (no images can be pulled), so it is checked instead:
// docker-compose accepts it, and the environment it gives api and worker is one Kiln's
// config loader accepts, with no variable Kiln does not read. It has no default passwords
// (it refuses to start without them) and buildkitd shares no network with Redis or PostgreSQL.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES, credentialsKeysOf, loadConfig } from '@kiln/core';

const compose = fileURLToPath(new URL('../docker-compose.yml', import.meta.url));

const PASSWORDS = {
  POSTGRES_PASSWORD: 'pg-pass-from-env',
  REDIS_PASSWORD: 'redis-pass-from-env',
  MINIO_ROOT_PASSWORD: 'minio-pass-from-env',
  KILN_CREDENTIALS_KEY: 'credentials-key-from-env-0123456789',
};

/** `docker-compose config` with `env` (and no .env file of the caller's). */
const composeConfig = (env: Record<string, string>) =>
  execFileSync('docker-compose', ['-f', compose, '--project-directory', tmpdir(), 'config'], {
    encoding: 'utf8',
    stdio: 'pipe',
    env: { PATH: process.env.PATH ?? '', ...env },
  });

test('docker-compose.yml is valid and its Kiln environment is what the config reads', () => {
  const yaml = composeConfig(PASSWORDS);
  // docker-compose 1.29 prints YAML only; it runs on Debian's Python with PyYAML, so that reads it back.
  const json = execFileSync(
    '/usr/bin/python3',
    ['-c', 'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'],
    {
      input: yaml,
      encoding: 'utf8',
    },
  );
  const config = JSON.parse(json) as {
    services: Record<
      string,
      { environment?: Record<string, string>; command?: string[]; networks?: Record<string, unknown> }
    >;
  };
  for (const service of ['api', 'worker']) {
    // The launcher that applies the memory settings the RSS budget was measured with.
    assert.deepEqual(config.services[service]?.command, ['scripts/run-app.sh', service]);
    const env = config.services[service]?.environment ?? {};
    const unknown = Object.keys(env).filter((k) => !CONFIG_VARIABLES.includes(k));
    assert.deepEqual(unknown, [], `${service} sets variables Kiln does not read`);
    const parsed = loadConfig(env);
    assert.equal(parsed.storage.kind, 's3');
    assert.deepEqual(parsed.builders, [{ address: 'tcp://buildkitd:1234', concurrency: 4 }]);
    assert.equal(parsed.databaseUrl, `postgresql://kiln:${PASSWORDS.POSTGRES_PASSWORD}@postgres:5432/kiln`);
    assert.equal(parsed.redisUrl, `redis://:${PASSWORDS.REDIS_PASSWORD}@redis:6379`);
    // Registry logins and build secrets are accepted only with it.
    assert.deepEqual(parsed.credentialsKeys, credentialsKeysOf(PASSWORDS.KILN_CREDENTIALS_KEY));
  }
  assert.ok(config.services.redis?.command?.includes(PASSWORDS.REDIS_PASSWORD), 'redis-server --requirepass');
  const networks = (service: string) => Object.keys(config.services[service]?.networks ?? {});
  const control = new Set([...networks('redis'), ...networks('postgres')]);
  assert.ok(networks('buildkitd').length > 0, 'buildkitd is on a named network');
  assert.deepEqual(
    networks('buildkitd').filter((n) => control.has(n)),
    [],
    'buildkitd shares a network with Redis or PostgreSQL',
  );
  for (const n of networks('buildkitd')) assert.ok(networks('worker').includes(n), `worker is on ${n}`);
  for (const n of control) assert.ok(networks('worker').includes(n) && networks('api').includes(n), n);
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
  assert.match(dockerfile, /^COPY scripts\/run-app\.sh \.\/scripts\/$/m);
  assert.match(dockerfile, /^CMD \["scripts\/run-app\.sh", "api"\]$/m);
  assert.ok(
    config.services.buildkitd && config.services.minio && config.services.postgres && config.services.redis,
  );
});

test('docker-compose.yml has no default passwords: each missing one stops it, named', () => {
  for (const name of Object.keys(PASSWORDS)) {
    const env = Object.fromEntries(Object.entries(PASSWORDS).filter(([k]) => k !== name));
    assert.throws(
      () => composeConfig(env),
      (err: Error & { stderr?: string }) => new RegExp(`set ${name}`).test(String(err.stderr)),
      name,
    );
  }
});
