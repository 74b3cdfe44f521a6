import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from './config.js';
import { credentialsKeysOf } from './credentials-keys.js';

const base = {
  DATABASE_URL: 'postgresql://u@127.0.0.1:5432/kiln',
  REDIS_URL: 'redis://127.0.0.1:6379',
  KILN_SIGNING_KEY: 'k'.repeat(32),
};

test('defaults for one machine', () => {
  const c = loadConfig(base);
  assert.equal(c.port, 8080);
  assert.equal(c.publicUrl, 'http://localhost:8080');
  assert.equal(c.storage.kind, 'local');
  assert.deepEqual(c.builders, [{ address: 'docker:///var/run/docker.sock', concurrency: 2 }]);
  assert.deepEqual(c.retention, { days: 30, contextDays: 7, intervalSeconds: 3600 });
});

test('completion event settings: defaults, overrides, bounds', () => {
  assert.deepEqual(loadConfig(base).events, {
    attempts: 10,
    backoffMs: 10_000,
    timeoutSeconds: 10,
    allowedNetworks: [],
  });
  const c = loadConfig({
    ...base,
    KILN_EVENT_ATTEMPTS: '3',
    KILN_EVENT_BACKOFF_MS: '200',
    KILN_EVENT_TIMEOUT_SECONDS: '2',
  });
  assert.deepEqual(c.events, { attempts: 3, backoffMs: 200, timeoutSeconds: 2, allowedNetworks: [] });
  for (const [variable, value] of [
    ['KILN_EVENT_ATTEMPTS', '0'],
    ['KILN_EVENT_BACKOFF_MS', '5'],
    ['KILN_EVENT_TIMEOUT_SECONDS', 'soon'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (err: unknown) => err instanceof ConfigError && err.variable === variable,
    );
  }
});

test('retention settings', () => {
  const c = loadConfig({
    ...base,
    KILN_RETENTION_DAYS: '90',
    KILN_CONTEXT_RETENTION_DAYS: '1',
    KILN_RETENTION_INTERVAL_SECONDS: '60',
  });
  assert.deepEqual(c.retention, { days: 90, contextDays: 1, intervalSeconds: 60 });
  for (const [variable, value] of [
    ['KILN_RETENTION_DAYS', '0'],
    ['KILN_CONTEXT_RETENTION_DAYS', '-1'],
    ['KILN_RETENTION_INTERVAL_SECONDS', '0'],
    ['KILN_RETENTION_DAYS', '1.5'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (e: unknown) => e instanceof ConfigError && e.variable === variable,
      `${variable}=${value}`,
    );
  }
});

test('S3 storage when a bucket is set; builders with their own concurrency', () => {
  const c = loadConfig({
    ...base,
    KILN_SIGNING_KEY: undefined,
    KILN_S3_BUCKET: 'b',
    KILN_S3_ENDPOINT: 'http://127.0.0.1:9000',
    KILN_BUILDERS: 'tcp://a:1234=4, unix:///run/buildkit/buildkitd.sock',
  });
  assert.equal(c.storage.kind, 's3');
  assert.deepEqual(c.builders, [
    { address: 'tcp://a:1234', concurrency: 4 },
    { address: 'unix:///run/buildkit/buildkitd.sock', concurrency: 2 },
  ]);
});

test("the builders' S3 keys for the shared cache are their own, both or neither; never Kiln's", () => {
  const s3 = {
    ...base,
    KILN_SIGNING_KEY: undefined,
    KILN_S3_BUCKET: 'b',
    AWS_ACCESS_KEY_ID: 'KILN',
    AWS_SECRET_ACCESS_KEY: 'KILN-SECRET',
  };
  const own = loadConfig(s3).buildCache;
  assert.ok(own?.kind === 's3');
  assert.equal(own.accessKeyId, undefined);
  const theirs = loadConfig({
    ...s3,
    KILN_BUILD_CACHE_S3_ACCESS_KEY_ID: 'B',
    KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY: 'B-SECRET',
  }).buildCache;
  assert.ok(theirs?.kind === 's3');
  assert.deepEqual([theirs.accessKeyId, theirs.secretAccessKey], ['B', 'B-SECRET']);
  assert.throws(
    () => loadConfig({ ...s3, KILN_BUILD_CACHE_S3_ACCESS_KEY_ID: 'B' }),
    (e: unknown) => e instanceof ConfigError && e.variable === 'KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY',
  );
});

test('dns+tcp:// builders: a name and port, resolved by the DNS servers set (default the system)', () => {
  const c = loadConfig({
    ...base,
    KILN_BUILDERS: 'dns+tcp://buildkitd.kiln.svc.cluster.local:1234=3',
    KILN_BUILDER_DNS_SERVERS: '10.96.0.10, 127.0.0.1:5353,[::1]:53',
    KILN_BUILDER_DISCOVERY_INTERVAL_SECONDS: '5',
  });
  assert.deepEqual(c.builders, [
    { address: 'dns+tcp://buildkitd.kiln.svc.cluster.local:1234', concurrency: 3 },
  ]);
  assert.deepEqual(c.builderDiscovery, {
    dnsServers: ['10.96.0.10', '127.0.0.1:5353', '[::1]:53'],
    intervalSeconds: 5,
  });
  assert.equal(c.builderKeepaliveSeconds, 330);
  assert.equal(loadConfig({ ...base, KILN_BUILDER_KEEPALIVE_SECONDS: '0' }).builderKeepaliveSeconds, 0);
  assert.deepEqual(loadConfig(base).builderDiscovery, { dnsServers: [], intervalSeconds: 10 });
  for (const [variable, value] of [
    ['KILN_BUILDERS', 'dns+tcp://buildkitd'],
    ['KILN_BUILDERS', 'dns+tcp://user@buildkitd:1234'],
    ['KILN_BUILDER_DNS_SERVERS', 'kube-dns.kube-system'],
    ['KILN_BUILDER_DNS_SERVERS', '10.0.0.1:70000'],
    ['KILN_BUILDER_DISCOVERY_INTERVAL_SECONDS', '0'],
    ['KILN_BUILDER_KEEPALIVE_SECONDS', '-1'],
    ['KILN_BUILDER_KEEPALIVE_SECONDS', '5m'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (e: unknown) => e instanceof ConfigError && e.variable === variable,
      `${variable}=${value}`,
    );
  }
});

test('a bad value names the variable and the value', () => {
  const bad = (env: Record<string, string | undefined>, variable: string, pattern: RegExp) =>
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (e: unknown) => e instanceof ConfigError && e.variable === variable && pattern.test(e.message),
    );
  bad({ KILN_PORT: 'eighty' }, 'KILN_PORT', /got "eighty"/);
  bad({ DATABASE_URL: undefined }, 'DATABASE_URL', /not set/);
  bad({ REDIS_URL: 'http://x' }, 'REDIS_URL', /redis:\/\//);
  bad({ KILN_SIGNING_KEY: undefined }, 'KILN_SIGNING_KEY', /local directory/);
  bad({ KILN_BUILDERS: 'ftp://x' }, 'KILN_BUILDERS', /not a unix/);
  bad({ KILN_S3_FORCE_PATH_STYLE: 'yes' }, 'KILN_S3_FORCE_PATH_STYLE', /got "yes"/);
  bad({ KILN_BUILDER_ISOLATION: 'tenant' }, 'KILN_BUILDER_ISOLATION', /got "tenant"/);
  // Credentials in an address another variable names are not echoed either.
  bad(
    { KILN_BUILDERS: 'tcp://u:S3cretPw@b:1234=0' },
    'KILN_BUILDERS',
    /concurrency of tcp:\/\/\*\*\*@b:1234 must/,
  );
  bad({ KILN_S3_ENDPOINT: 'http://u:S3cretPw@' }, 'KILN_S3_ENDPOINT', /got "http:\/\/\*\*\*@"/);
  assert.equal(loadConfig(base).builderIsolation, 'shared');
  assert.deepEqual(loadConfig(base).webhooks.cloneHosts, ['github.com', 'gitlab.com']);
  assert.equal(loadConfig({ ...base, KILN_BUILDER_ISOLATION: 'project' }).builderIsolation, 'project');
  // Secrets, and URLs that may carry a password, are described, never echoed.
  for (const [variable, value] of [
    ['KILN_SIGNING_KEY', 'short-but-real-key'],
    ['KILN_OPERATOR_TOKEN', 'short-but-real-token'],
    ['DATABASE_URL', 'postgres+tls://kiln:S3cretPw@db/kiln'],
    ['REDIS_URL', 'http://:S3cretPw@redis'],
  ] as const) {
    bad({ [variable]: value }, variable, /got \d+ characters, not shown/);
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (e: unknown) => e instanceof Error && !e.message.includes(value) && !e.message.includes('S3cretPw'),
    );
  }
});

test('builder TLS: PEM files read at start-up, applied to tcp:// builders only', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kiln-tls-'));
  try {
    const pem = (name: string) => {
      const file = path.join(dir, name);
      writeFileSync(file, `-----BEGIN ${name}-----\nAA==\n-----END ${name}-----\n`);
      return file;
    };
    const env = {
      ...base,
      KILN_BUILDERS: 'tcp://a:1234=4,unix:///run/buildkit/buildkitd.sock',
      KILN_BUILDER_TLS_CA: pem('CA'),
      KILN_BUILDER_TLS_CERT: pem('CERT'),
      KILN_BUILDER_TLS_KEY: pem('KEY'),
      KILN_BUILDER_TLS_SERVER_NAME: 'buildkitd.internal',
    };
    const [tcp, unix] = loadConfig(env).builders;
    assert.match(tcp?.tls?.ca ?? '', /BEGIN CA/);
    assert.match(tcp?.tls?.cert ?? '', /BEGIN CERT/);
    assert.match(tcp?.tls?.key ?? '', /BEGIN KEY/);
    assert.equal(tcp?.tls?.serverName, 'buildkitd.internal');
    assert.equal(unix?.tls, undefined);
    // A CA alone: the daemon's certificate is verified, no client certificate is sent.
    const caOnly = loadConfig({ ...base, KILN_BUILDERS: 'tcp://a:1234', KILN_BUILDER_TLS_CA: pem('CA') });
    assert.deepEqual(Object.keys(caOnly.builders[0]?.tls ?? {}), ['ca']);

    const bad = (over: Record<string, string | undefined>, variable: string, pattern: RegExp) =>
      assert.throws(
        () => loadConfig({ ...env, ...over }),
        (e: unknown) => e instanceof ConfigError && e.variable === variable && pattern.test(e.message),
      );
    bad({ KILN_BUILDER_TLS_CA: path.join(dir, 'missing.pem') }, 'KILN_BUILDER_TLS_CA', /cannot read/);
    bad({ KILN_BUILDER_TLS_CERT: dir }, 'KILN_BUILDER_TLS_CERT', /cannot read/);
    writeFileSync(path.join(dir, 'plain'), 'not a key');
    bad({ KILN_BUILDER_TLS_KEY: path.join(dir, 'plain') }, 'KILN_BUILDER_TLS_KEY', /not a PEM file/);
    bad({ KILN_BUILDER_TLS_KEY: undefined }, 'KILN_BUILDER_TLS_KEY', /required with KILN_BUILDER_TLS_CERT/);
    bad({ KILN_BUILDER_TLS_CERT: undefined }, 'KILN_BUILDER_TLS_CERT', /required with KILN_BUILDER_TLS_KEY/);
    bad(
      { KILN_BUILDER_TLS_CA: undefined, KILN_BUILDER_TLS_CERT: undefined, KILN_BUILDER_TLS_KEY: undefined },
      'KILN_BUILDER_TLS_SERVER_NAME',
      /needs KILN_BUILDER_TLS_CA/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('network settings: event receivers and git (SSRF), git host lists, trusted proxies', () => {
  assert.deepEqual(loadConfig(base).git, { allowedHosts: [], deniedHosts: [], allowedNetworks: [] });
  const c = loadConfig({
    ...base,
    KILN_EVENT_ALLOWED_NETWORKS: '10.20.0.0/16, fd00::/8',
    KILN_GIT_ALLOWED_HOSTS: 'git.example.com,*.Corp.Example',
    KILN_GIT_DENIED_HOSTS: 'evil.example.com',
    KILN_GIT_ALLOWED_NETWORKS: '127.0.0.1',
    KILN_TRUSTED_PROXIES: '10.0.0.0/8, ::1, [fd00::1]/128',
  });
  assert.deepEqual(loadConfig(base).trustedProxies, []);
  assert.deepEqual(c.trustedProxies, ['10.0.0.0/8', '::1', 'fd00::1/128']);
  assert.deepEqual(
    c.events.allowedNetworks.map((n) => [n.text, n.prefix]),
    [
      ['10.20.0.0/16', 16],
      ['fd00::/8', 8],
    ],
  );
  assert.deepEqual(c.git.allowedHosts, ['git.example.com', '*.corp.example']);
  assert.deepEqual(c.git.deniedHosts, ['evil.example.com']);
  assert.deepEqual(
    c.git.allowedNetworks.map((n) => n.prefix),
    [32],
  );
  for (const [variable, value] of [
    ['KILN_EVENT_ALLOWED_NETWORKS', '10.0.0.0/33'],
    ['KILN_EVENT_ALLOWED_NETWORKS', 'example.com'],
    ['KILN_GIT_ALLOWED_NETWORKS', '::1/129'],
    ['KILN_GIT_ALLOWED_HOSTS', 'a b'],
    ['KILN_GIT_DENIED_HOSTS', 'host/path'],
    ['KILN_TRUSTED_PROXIES', 'proxy.internal'],
    ['KILN_TRUSTED_PROXIES', '10.0.0.0/40'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (e: unknown) => e instanceof ConfigError && e.variable === variable,
      `${variable}=${value}`,
    );
  }
});

test('observability settings: log format, projects with a metrics label, the traces endpoint', () => {
  const defaults = loadConfig(base);
  assert.equal(defaults.logFormat, 'auto');
  assert.equal(defaults.metricsMaxProjects, 20);
  assert.equal(defaults.otlpTracesUrl, undefined);
  const c = loadConfig({
    ...base,
    KILN_LOG_FORMAT: 'json',
    KILN_METRICS_MAX_PROJECTS: '0',
    KILN_OTLP_TRACES_URL: 'http://collector:4318/v1/traces',
  });
  assert.equal(c.logFormat, 'json');
  assert.equal(c.metricsMaxProjects, 0);
  assert.equal(c.otlpTracesUrl, 'http://collector:4318/v1/traces');
  for (const [variable, value] of [
    ['KILN_LOG_FORMAT', 'text'],
    ['KILN_METRICS_MAX_PROJECTS', '-1'],
    ['KILN_METRICS_MAX_PROJECTS', '1001'],
    ['KILN_OTLP_TRACES_URL', 'collector:4318'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [variable]: value }),
      (e: unknown) => e instanceof ConfigError && e.variable === variable,
      `${variable}=${value}`,
    );
  }
});

test('credentials keys: KILN_CREDENTIALS_KEY, else the signing key; the keys they replaced open only', () => {
  const [current, p1, p2] = ['c'.repeat(32), 'p'.repeat(32), 'q'.repeat(40)];
  assert.deepEqual(
    loadConfig({ ...base, KILN_CREDENTIALS_KEY: current, KILN_CREDENTIALS_PREVIOUS_KEYS: ` ${p1}, ${p2} ` })
      .credentialsKeys,
    credentialsKeysOf(current, [p1, p2]),
  );
  assert.deepEqual(loadConfig(base).credentialsKeys, credentialsKeysOf(base.KILN_SIGNING_KEY));
  const s3 = { ...base, KILN_SIGNING_KEY: undefined, KILN_S3_BUCKET: 'b' };
  assert.equal(loadConfig(s3).credentialsKeys, undefined);
  const refused = (env: Record<string, string | undefined>, pattern: RegExp) =>
    assert.throws(
      () => loadConfig(env),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.variable === 'KILN_CREDENTIALS_PREVIOUS_KEYS' &&
        pattern.test(e.message) &&
        !e.message.includes('short-old-key') &&
        !e.message.includes(p1),
    );
  refused({ ...base, KILN_CREDENTIALS_PREVIOUS_KEYS: `${p1},short-old-key` }, /key 2 must be at least 32/);
  // Nothing would seal again what they open.
  refused({ ...s3, KILN_CREDENTIALS_PREVIOUS_KEYS: p1 }, /needs KILN_CREDENTIALS_KEY/);
});
