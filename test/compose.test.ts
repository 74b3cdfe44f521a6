// docker-compose.yml cannot run here (no images can be pulled), so it is checked instead:
// docker-compose accepts it, and the environment it gives api and worker is one Kiln's
// config loader accepts, with no variable Kiln does not read.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES, loadConfig } from '@kiln/core';

const compose = fileURLToPath(new URL('../docker-compose.yml', import.meta.url));

test('docker-compose.yml is valid and its Kiln environment is what the config reads', () => {
  const yaml = execFileSync('docker-compose', ['-f', compose, 'config'], { encoding: 'utf8' });
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
    services: Record<string, { environment?: Record<string, string>; command?: string[] }>;
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
  }
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
  assert.match(dockerfile, /^COPY scripts\/run-app\.sh \.\/scripts\/$/m);
  assert.match(dockerfile, /^CMD \["scripts\/run-app\.sh", "api"\]$/m);
  assert.ok(
    config.services.buildkitd && config.services.minio && config.services.postgres && config.services.redis,
  );
});
