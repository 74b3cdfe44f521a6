import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { type BuildCacheConfig, buildCacheFor } from './build-cache.js';
import { type CredentialsKeys, credentialsKeysOf } from './credentials-keys.js';
import type { LogFormatSetting } from './log-format.js';
import { type Network, parseNetworks } from './net/address.js';
import { parseHostPatterns } from './net/host-patterns.js';
import { redactAddress } from './net/redact-address.js';

/** A bad or missing environment variable; start-up stops with this message. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/** Whether builders serve any project's builds at once, or one project's at a time (KILN_BUILDER_ISOLATION). */
export const BUILDER_ISOLATIONS = ['shared', 'project'] as const;
export type BuilderIsolation = (typeof BUILDER_ISOLATIONS)[number];

/** Every variable Kiln reads, with defaults for the one-machine setup. docker-compose sets the same names. */
const ENV = z.object({
  KILN_PORT: int(1, 65535).default(8080),
  KILN_HOST: z.string().min(1).default('0.0.0.0'),
  KILN_PUBLIC_URL: z.url().optional(),
  KILN_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  KILN_LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgresql:// URL'),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL'),
  KILN_DATA_DIR: z.string().min(1).default('.kiln/data'),
  KILN_SIGNING_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  KILN_S3_BUCKET: z.string().min(1).optional(),
  KILN_S3_ENDPOINT: z.url().optional(),
  KILN_S3_REGION: z.string().min(1).default('us-east-1'),
  KILN_S3_FORCE_PATH_STYLE: bool.default(true),
  AWS_ACCESS_KEY_ID: z.string().optional(),
  AWS_SECRET_ACCESS_KEY: z.string().optional(),
  KILN_BUILDERS: z.string().optional(),
  BUILDKIT_HOST: z.string().optional(),
  KILN_BUILDER_CONCURRENCY: int(1, 64).default(2),
  KILN_BUILDER_TLS_CA: z.string().min(1).optional(),
  KILN_BUILDER_TLS_CERT: z.string().min(1).optional(),
  KILN_BUILDER_TLS_KEY: z.string().min(1).optional(),
  KILN_BUILDER_TLS_SERVER_NAME: z.string().min(1).optional(),
  KILN_BUILDER_DNS_SERVERS: z.string().default(''),
  KILN_BUILDER_DISCOVERY_INTERVAL_SECONDS: int(1, 3600).default(10),
  KILN_BUILDER_KEEPALIVE_SECONDS: int(0, 86_400).default(330),
  KILN_BUILDER_ISOLATION: z.enum(BUILDER_ISOLATIONS).default('shared'),
  KILN_WORKER_CONCURRENCY: int(1, 256).default(4),
  KILN_BUILD_TIMEOUT_SECONDS: int(10, 86_400).default(3600),
  KILN_BUILD_ATTEMPTS: int(1, 10).default(3),
  KILN_URL_TTL_SECONDS: int(10, 7 * 86_400).default(900),
  KILN_MAX_CONTEXT_BYTES: int(1024, 64 * 1024 ** 3).default(2 * 1024 ** 3),
  KILN_MAX_CONTEXT_ENTRIES: int(1, 10_000_000).default(200_000),
  KILN_MAX_UPLOADS_PER_PROJECT: int(1, 10_000).default(8),
  KILN_UPLOAD_SPOOL_BYTES: int(2048, 2 ** 50).default(8 * 1024 ** 3),
  KILN_RATE_LIMIT_PER_MINUTE: int(0, 10_000_000).default(6000),
  KILN_AUTH_FAILURES_PER_MINUTE: int(0, 10_000_000).default(0),
  KILN_TRUSTED_PROXIES: z.string().default(''),
  KILN_REQUEST_TIMEOUT_SECONDS: int(1, 86_400).default(600),
  KILN_CONNECTION_TIMEOUT_SECONDS: int(1, 86_400).default(60),
  KILN_RECONCILE_INTERVAL_SECONDS: int(1, 3600).default(15),
  KILN_SHUTDOWN_GRACE_SECONDS: int(0, 86_400).default(30),
  KILN_RETENTION_DAYS: int(1, 36_500).default(30),
  KILN_CONTEXT_RETENTION_DAYS: int(1, 36_500).default(7),
  KILN_RETENTION_INTERVAL_SECONDS: int(1, 7 * 86_400).default(3600),
  KILN_EVENT_ATTEMPTS: int(1, 30).default(10),
  KILN_EVENT_BACKOFF_MS: int(10, 3_600_000).default(10_000),
  KILN_EVENT_TIMEOUT_SECONDS: int(1, 300).default(10),
  KILN_MAX_LOG_BYTES: int(64 * 1024, 1024 ** 3).default(4 * 1024 ** 2),
  KILN_MAX_LOG_FOLLOWERS_PER_PROJECT: int(1, 100_000).default(50),
  KILN_MAX_LOG_STREAM_SECONDS: int(1, 7 * 86_400).default(3600),
  KILN_TRIGGERS_PER_PROJECT: int(1, 100_000).default(100),
  KILN_TRIGGERS_PER_REPOSITORY: int(1, 1000).default(20),
  KILN_TRIGGERS_PER_PROJECT_REPOSITORY: int(1, 1000).default(5),
  KILN_WEBHOOK_RATE_LIMIT_PER_MINUTE: int(0, 10_000_000).default(1200),
  KILN_WEBHOOK_REPOSITORY_RATE_LIMIT_PER_MINUTE: int(0, 10_000_000).default(120),
  KILN_WEBHOOK_CONCURRENCY: int(1, 64).default(4),
  KILN_WEBHOOK_MAX_AGE_SECONDS: int(0, 30 * 86_400).default(600),
  KILN_WEBHOOK_CLONE_HOSTS: z.string().default('github.com,gitlab.com'),
  KILN_EVENT_ALLOWED_NETWORKS: z.string().default(''),
  KILN_GIT_ALLOWED_HOSTS: z.string().default(''),
  KILN_ALLOWED_FRONTENDS: z.string().default(''),
  KILN_GIT_DENIED_HOSTS: z.string().default(''),
  KILN_GIT_ALLOWED_NETWORKS: z.string().default(''),
  KILN_REGISTRY_ALLOWED_HOSTS: z.string().default(''),
  KILN_REGISTRY_DENIED_HOSTS: z.string().default(''),
  KILN_REGISTRY_ALLOWED_NETWORKS: z.string().default(''),
  KILN_REGISTRY_LOGINS_PER_PROJECT: int(1, 10_000).default(50),
  KILN_BUILD_CACHE: z.enum(['auto', 'off']).default('auto'),
  KILN_BUILD_CACHE_S3_ENDPOINT: z.url().optional(),
  KILN_BUILD_CACHE_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  KILN_BUILD_CACHE_MAX_BYTES: int(0, 2 ** 50).default(10 * 1024 ** 3),
  KILN_CREDENTIALS_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  KILN_CREDENTIALS_PREVIOUS_KEYS: z.string().default(''),
  KILN_OPERATOR_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  KILN_METRICS_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  KILN_BUILDER_DRAIN_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  KILN_METRICS_MAX_PROJECTS: int(0, 1000).default(20),
  KILN_STATS_SAMPLE_SECONDS: int(1, 60).default(15),
  KILN_OTLP_TRACES_URL: z
    .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
    .optional(),
  KILN_QUOTA_QUEUED_BUILDS: int(0, 10_000_000).default(500),
  KILN_QUOTA_RUNNING_BUILDS: int(0, 100_000).default(0),
  KILN_QUOTA_ARTIFACT_BYTES: int(0, 2 ** 50).default(16 * 1024 ** 3),
  KILN_QUOTA_STORED_BYTES: int(0, 2 ** 53 - 1).default(100 * 1024 ** 3),
});

/** The names of every environment variable Kiln reads (docker-compose.yml is checked against it). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(ENV.shape);

export type StorageConfig =
  | { kind: 'local'; root: string; publicBaseUrl: string; signingKey: string }
  | {
      kind: 's3';
      bucket: string;
      region: string;
      endpoint?: string;
      forcePathStyle: boolean;
      accessKeyId?: string;
      secretAccessKey?: string;
    };

/** How workers dial `tcp://` builders over TLS: PEM text read from the files at start-up. */
export interface BuilderTls {
  /** Verifies the daemon's certificate (default: the system's roots). */
  ca?: string;
  /** The client certificate and key a daemon with `--tlscacert` asks for. */
  cert?: string;
  key?: string;
  /** The name the daemon's certificate is checked against, when not the address's host. */
  serverName?: string;
}

export interface KilnConfig {
  port: number;
  host: string;
  publicUrl: string;
  logLevel: string;
  /** `auto`: readable lines when stdout is a terminal, JSON otherwise (`log-format.ts`). */
  logFormat: LogFormatSetting;
  databaseUrl: string;
  redisUrl: string;
  dataDir: string;
  storage: StorageConfig;
  /**
   * BuildKit addresses (`docker://`, `unix://`, `tcp://`, `dns+tcp://`), each with its own
   * concurrency (a `dns+tcp://` name: each member's); `tcp://` and `dns+tcp://` ones with TLS when set.
   */
  builders: Array<{ address: string; concurrency: number; tls?: BuilderTls }>;
  /** How `dns+tcp://` builder names are resolved into members (workers only). */
  builderDiscovery: {
    /** `ip` or `ip:port` of the DNS servers to ask; empty: the system's resolver configuration. */
    dnsServers: string[];
    intervalSeconds: number;
  };
  /**
   * A builder connection with calls in progress is pinged this often; one that does not answer
   * within min(20 s, this) is dropped and its builds fail as infrastructure (retried). 0: never.
   * Go gRPC servers refuse pings more often than every 5 minutes from a client they send nothing
   * to, so lower values only suit builders configured to accept them.
   */
  builderKeepaliveSeconds: number;
  /**
   * `project`: a builder serves one project's builds at a time, for builders whose RUN steps can
   * see each other (rootless buildkitd shares its process namespace with them). `shared`: any.
   */
  builderIsolation: BuilderIsolation;
  workerConcurrency: number;
  buildTimeoutSeconds: number;
  buildAttempts: number;
  urlTtlSeconds: number;
  limits: {
    maxContextBytes: number;
    maxContextEntries: number;
    /** Context uploads one project may have in progress on one API process (each holds a temp file). */
    maxUploadsPerProject: number;
    /**
     * Bytes the temp files of uploads in progress may take on one API process, all projects
     * together; one project may take half. At least twice KILN_MAX_CONTEXT_BYTES, so the largest
     * context fits.
     */
    uploadSpoolBytes: number;
  };
  /** Requests per minute one API token may make (0: no limit); counted in Redis, so across API replicas. */
  rateLimitPerMinute: number;
  /**
   * Requests with an unknown or revoked token one address may make per minute (0, the default:
   * no limit) before its requests with tokens not in the API's cache are refused unread (each
   * costs a PostgreSQL look-up otherwise); counted in Redis. Off by default: behind a proxy every
   * client has its address, and one client's guesses would lock the others out, unless the
   * proxy is in trustedProxies.
   */
  authFailuresPerMinute: number;
  /**
   * Proxies (addresses, CIDR networks) whose X-Forwarded-For the API believes: a request from one
   * counts against its client's address (the last one in the header no trusted proxy added), in
   * the unknown-token and webhook limits. Empty (the default): the TCP peer's address, whatever
   * the request says.
   */
  trustedProxies: string[];
  /** Longest an HTTP request (an upload included) may take, and an idle connection may stay open. */
  requestTimeoutSeconds: number;
  connectionTimeoutSeconds: number;
  /** How often the worker re-enqueues builds Redis lost. */
  reconcileIntervalSeconds: number;
  /** How long a stopping worker lets running builds finish before handing them back. */
  shutdownGraceSeconds: number;
  retention: {
    /** Artifacts and logs of builds finished longer ago are deleted; the builds become `expired`. */
    days: number;
    /** Context objects no build created within this many days uses are deleted. */
    contextDays: number;
    /** How often one worker (of all) runs the retention pass. */
    intervalSeconds: number;
  };
  /** Completion events (POSTs to the projects' endpoints). */
  events: {
    /** Attempts per delivery before it is marked failed. */
    attempts: number;
    /** First retry delay; each further one doubles (10 attempts at 10 s span about 85 minutes). */
    backoffMs: number;
    /** Longest one POST may take, answer included. */
    timeoutSeconds: number;
    /** Special-purpose networks (loopback, private, ...) receivers may still be in: internal receivers. */
    allowedNetworks: Network[];
  };
  /** Build logs and their live streams. */
  logs: {
    /** Live (SSE) followers one project may hold open, across every API process (counted in Redis). */
    maxFollowersPerProject: number;
    /** A live stream older than this ends with a `reconnect` event. */
    maxStreamSeconds: number;
  };
  /** Webhook triggers and the inbound receivers (`/v1/hooks/*`), which anyone can reach. */
  webhooks: {
    /** Triggers one project may have. */
    triggersPerProject: number;
    /**
     * Triggers one repository (provider + name) may have, all projects together: a push delivery
     * is checked against that many at most.
     */
    triggersPerRepository: number;
    /**
     * Of those, the places one project may take, so that one project cannot fill a repository
     * and lock every other project out of it (projects are made by the operator, not by tenants).
     */
    triggersPerProjectRepository: number;
    /** Hook requests a minute from one source address, counted in Redis before the body is read (0: no limit). */
    perAddressPerMinute: number;
    /** Verified push deliveries a minute for one repository, counted in Redis (0: no limit). */
    perRepositoryPerMinute: number;
    /** Deliveries parsed and verified at once in one API process; twice as many more may wait. */
    concurrency: number;
    /** A GitHub push whose `repository.pushed_at` is older than this is ignored (0: no check). */
    maxAgeSeconds: number;
    /**
     * Hosts whose clone URLs a push payload may name for a trigger without its own cloneUrl
     * (host patterns): the payload is the sender's word, and whoever holds a trigger's secret
     * could otherwise have any repository built.
     */
    cloneHosts: string[];
  };
  /** Hosts of git contexts (builds and triggers); see GitHostPolicy. */
  git: { allowedHosts: string[]; deniedHosts: string[]; allowedNetworks: Network[] };
  /** The shared build cache (S3 storage only; see build-cache.ts); undefined when off. */
  buildCache?: BuildCacheConfig;
  /** Registries image outputs may push to (see RegistryPolicy), and how many logins a project holds. */
  registries: {
    allowedHosts: string[];
    deniedHosts: string[];
    allowedNetworks: Network[];
    loginsPerProject: number;
  };
  /**
   * Seals registry logins and build secrets at rest: KILN_CREDENTIALS_KEY, else KILN_SIGNING_KEY;
   * what the keys in KILN_CREDENTIALS_PREVIOUS_KEYS sealed still opens. Undefined: neither is
   * set, and neither logins nor build secrets are accepted.
   */
  credentialsKeys?: CredentialsKeys;
  /** Authenticates /v1/admin (projects, quotas); without it those routes answer 404. */
  operatorToken?: string;
  /** Authenticates /metrics (a scraper needs no project); without it /metrics answers 404. */
  metricsToken?: string;
  /**
   * Authenticates POST /v1/builders/drain, which builder pods call as they stop; without it that
   * route answers 404. It can only hold builders back from new builds for a while.
   */
  builderDrainToken?: string;
  /** Projects with a label of their own in the build histograms (the first ones seen); the rest are `other`. */
  metricsMaxProjects: number;
  /** How often each API samples builds waiting and builder slots into the per-minute stats (peaks kept). */
  statsSampleSeconds: number;
  /** The OTLP/HTTP endpoint traces go to (…/v1/traces); unset: no tracing. */
  otlpTracesUrl?: string;
  /** Per-project defaults; a project's own value (set by the operator) wins. 0: no limit. */
  quotas: ProjectQuotas;
  /**
   * Frontend images an uploaded Dockerfile may select with `# syntax=` (exactly as written there);
   * empty: none, every such Dockerfile is refused.
   */
  allowedFrontends: string[];
}

/** What one project may hold at once; 0 is no limit (but for the log budget, which has a floor). */
export interface ProjectQuotas {
  /** Builds waiting (`queued`): a POST over it is answered 429 quota_exceeded. */
  queuedBuilds: number;
  /** Builds holding a builder slot: one more waits in the queue, other projects go first. */
  runningBuilds: number;
  /** Bytes of one build's artifact: past it the export stops and the build fails output_too_large. */
  artifactBytes: number;
  /** Bytes of one build's log text (KILN_MAX_LOG_BYTES): past it one truncation marker, then only Kiln's closing lines. */
  logBytes: number;
  /**
   * Bytes of the contexts and artifacts the project keeps stored, each counted once at full size
   * however many builds or projects share it: a POST over it is answered 429 quota_exceeded, an
   * export that would pass it fails output_too_large.
   */
  storedBytes: number;
}

/** Reads and validates the environment once; the first bad variable throws a ConfigError naming it. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): KilnConfig {
  const parsed = ENV.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue?.path[0] ?? 'environment');
    throw new ConfigError(
      variable,
      `${issue?.message ?? 'invalid'} (${describeValue(variable, env[variable])})`,
    );
  }
  const e = parsed.data;
  // One project may take half the spool: the largest context must fit in that half.
  if (e.KILN_UPLOAD_SPOOL_BYTES < 2 * e.KILN_MAX_CONTEXT_BYTES) {
    throw new ConfigError(
      'KILN_UPLOAD_SPOOL_BYTES',
      `must be at least twice KILN_MAX_CONTEXT_BYTES (${2 * e.KILN_MAX_CONTEXT_BYTES}), got ${e.KILN_UPLOAD_SPOOL_BYTES}`,
    );
  }
  const publicUrl = (e.KILN_PUBLIC_URL ?? `http://localhost:${e.KILN_PORT}`).replace(/\/$/, '');
  let storage: StorageConfig;
  if (e.KILN_S3_BUCKET) {
    storage = {
      kind: 's3',
      bucket: e.KILN_S3_BUCKET,
      region: e.KILN_S3_REGION,
      forcePathStyle: e.KILN_S3_FORCE_PATH_STYLE,
      ...(e.KILN_S3_ENDPOINT ? { endpoint: e.KILN_S3_ENDPOINT } : {}),
      ...(e.AWS_ACCESS_KEY_ID ? { accessKeyId: e.AWS_ACCESS_KEY_ID } : {}),
      ...(e.AWS_SECRET_ACCESS_KEY ? { secretAccessKey: e.AWS_SECRET_ACCESS_KEY } : {}),
    };
  } else {
    if (!e.KILN_SIGNING_KEY) {
      throw new ConfigError(
        'KILN_SIGNING_KEY',
        'required when storage is a local directory (no KILN_S3_BUCKET)',
      );
    }
    storage = {
      kind: 'local',
      root: `${e.KILN_DATA_DIR}/objects`,
      publicBaseUrl: publicUrl,
      signingKey: e.KILN_SIGNING_KEY,
    };
  }
  const buildCache = buildCacheFor(
    storage,
    e.KILN_BUILD_CACHE,
    e.KILN_BUILD_CACHE_S3_ENDPOINT,
    e.KILN_BUILD_CACHE_MAX_BYTES,
    builderCacheKeys(e.KILN_BUILD_CACHE_S3_ACCESS_KEY_ID, e.KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY),
  );
  return {
    port: e.KILN_PORT,
    host: e.KILN_HOST,
    publicUrl,
    logLevel: e.KILN_LOG_LEVEL,
    logFormat: e.KILN_LOG_FORMAT,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    dataDir: e.KILN_DATA_DIR,
    storage,
    builders: parseBuilders(
      e.KILN_BUILDERS ?? e.BUILDKIT_HOST ?? 'docker:///var/run/docker.sock',
      e.KILN_BUILDER_CONCURRENCY,
      builderTls(e),
    ),
    builderDiscovery: {
      dnsServers: listSetting('KILN_BUILDER_DNS_SERVERS', e.KILN_BUILDER_DNS_SERVERS, parseDnsServers),
      intervalSeconds: e.KILN_BUILDER_DISCOVERY_INTERVAL_SECONDS,
    },
    builderKeepaliveSeconds: e.KILN_BUILDER_KEEPALIVE_SECONDS,
    builderIsolation: e.KILN_BUILDER_ISOLATION,
    workerConcurrency: e.KILN_WORKER_CONCURRENCY,
    buildTimeoutSeconds: e.KILN_BUILD_TIMEOUT_SECONDS,
    buildAttempts: e.KILN_BUILD_ATTEMPTS,
    urlTtlSeconds: e.KILN_URL_TTL_SECONDS,
    limits: {
      maxContextBytes: e.KILN_MAX_CONTEXT_BYTES,
      maxContextEntries: e.KILN_MAX_CONTEXT_ENTRIES,
      maxUploadsPerProject: e.KILN_MAX_UPLOADS_PER_PROJECT,
      uploadSpoolBytes: e.KILN_UPLOAD_SPOOL_BYTES,
    },
    rateLimitPerMinute: e.KILN_RATE_LIMIT_PER_MINUTE,
    authFailuresPerMinute: e.KILN_AUTH_FAILURES_PER_MINUTE,
    // Without brackets: Fastify's matcher refuses `[::1]`, which parseNetworks accepts.
    trustedProxies: listSetting('KILN_TRUSTED_PROXIES', e.KILN_TRUSTED_PROXIES, parseNetworks).map((n) =>
      n.text.replace(/^\[([^\]]*)\]/, '$1'),
    ),
    requestTimeoutSeconds: e.KILN_REQUEST_TIMEOUT_SECONDS,
    connectionTimeoutSeconds: e.KILN_CONNECTION_TIMEOUT_SECONDS,
    reconcileIntervalSeconds: e.KILN_RECONCILE_INTERVAL_SECONDS,
    shutdownGraceSeconds: e.KILN_SHUTDOWN_GRACE_SECONDS,
    retention: {
      days: e.KILN_RETENTION_DAYS,
      contextDays: e.KILN_CONTEXT_RETENTION_DAYS,
      intervalSeconds: e.KILN_RETENTION_INTERVAL_SECONDS,
    },
    events: {
      attempts: e.KILN_EVENT_ATTEMPTS,
      backoffMs: e.KILN_EVENT_BACKOFF_MS,
      timeoutSeconds: e.KILN_EVENT_TIMEOUT_SECONDS,
      allowedNetworks: listSetting(
        'KILN_EVENT_ALLOWED_NETWORKS',
        e.KILN_EVENT_ALLOWED_NETWORKS,
        parseNetworks,
      ),
    },
    allowedFrontends: e.KILN_ALLOWED_FRONTENDS.split(',')
      .map((v) => v.trim())
      .filter(Boolean),
    git: {
      allowedHosts: listSetting('KILN_GIT_ALLOWED_HOSTS', e.KILN_GIT_ALLOWED_HOSTS, parseHostPatterns),
      deniedHosts: listSetting('KILN_GIT_DENIED_HOSTS', e.KILN_GIT_DENIED_HOSTS, parseHostPatterns),
      allowedNetworks: listSetting('KILN_GIT_ALLOWED_NETWORKS', e.KILN_GIT_ALLOWED_NETWORKS, parseNetworks),
    },
    registries: {
      allowedHosts: listSetting(
        'KILN_REGISTRY_ALLOWED_HOSTS',
        e.KILN_REGISTRY_ALLOWED_HOSTS,
        parseHostPatterns,
      ),
      deniedHosts: listSetting('KILN_REGISTRY_DENIED_HOSTS', e.KILN_REGISTRY_DENIED_HOSTS, parseHostPatterns),
      allowedNetworks: listSetting(
        'KILN_REGISTRY_ALLOWED_NETWORKS',
        e.KILN_REGISTRY_ALLOWED_NETWORKS,
        parseNetworks,
      ),
      loginsPerProject: e.KILN_REGISTRY_LOGINS_PER_PROJECT,
    },
    ...(buildCache ? { buildCache } : {}),
    ...credentialsKeysSetting(e.KILN_CREDENTIALS_KEY ?? e.KILN_SIGNING_KEY, e.KILN_CREDENTIALS_PREVIOUS_KEYS),
    logs: {
      maxFollowersPerProject: e.KILN_MAX_LOG_FOLLOWERS_PER_PROJECT,
      maxStreamSeconds: e.KILN_MAX_LOG_STREAM_SECONDS,
    },
    webhooks: {
      triggersPerProject: e.KILN_TRIGGERS_PER_PROJECT,
      triggersPerRepository: e.KILN_TRIGGERS_PER_REPOSITORY,
      triggersPerProjectRepository: e.KILN_TRIGGERS_PER_PROJECT_REPOSITORY,
      perAddressPerMinute: e.KILN_WEBHOOK_RATE_LIMIT_PER_MINUTE,
      perRepositoryPerMinute: e.KILN_WEBHOOK_REPOSITORY_RATE_LIMIT_PER_MINUTE,
      concurrency: e.KILN_WEBHOOK_CONCURRENCY,
      maxAgeSeconds: e.KILN_WEBHOOK_MAX_AGE_SECONDS,
      cloneHosts: listSetting('KILN_WEBHOOK_CLONE_HOSTS', e.KILN_WEBHOOK_CLONE_HOSTS, parseHostPatterns),
    },
    ...(e.KILN_OPERATOR_TOKEN ? { operatorToken: e.KILN_OPERATOR_TOKEN } : {}),
    ...(e.KILN_METRICS_TOKEN ? { metricsToken: e.KILN_METRICS_TOKEN } : {}),
    ...(e.KILN_BUILDER_DRAIN_TOKEN ? { builderDrainToken: e.KILN_BUILDER_DRAIN_TOKEN } : {}),
    metricsMaxProjects: e.KILN_METRICS_MAX_PROJECTS,
    statsSampleSeconds: e.KILN_STATS_SAMPLE_SECONDS,
    ...(e.KILN_OTLP_TRACES_URL ? { otlpTracesUrl: e.KILN_OTLP_TRACES_URL } : {}),
    quotas: {
      queuedBuilds: e.KILN_QUOTA_QUEUED_BUILDS,
      runningBuilds: e.KILN_QUOTA_RUNNING_BUILDS,
      artifactBytes: e.KILN_QUOTA_ARTIFACT_BYTES,
      logBytes: e.KILN_MAX_LOG_BYTES,
      storedBytes: e.KILN_QUOTA_STORED_BYTES,
    },
  };
}

/** Variables whose values are secrets or may hold one (a password in a URL): never echoed. */
const SECRET_VARIABLE = /(KEYS?|KEY_ID|TOKEN|SECRET|PASSWORD)$|_URL$/;

/**
 * The credentials key and the comma-separated keys it replaced. A previous key without a current
 * one would open what nothing can seal again: start-up stops instead. Messages never quote keys.
 */
function credentialsKeysSetting(
  current: string | undefined,
  previousList: string,
): { credentialsKeys?: CredentialsKeys } {
  const variable = 'KILN_CREDENTIALS_PREVIOUS_KEYS';
  const previous = previousList
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  const short = previous.findIndex((k) => k.length < 32);
  if (short >= 0) throw new ConfigError(variable, `key ${short + 1} must be at least 32 characters`);
  if (previous.length > 0 && current === undefined) {
    throw new ConfigError(
      variable,
      'needs KILN_CREDENTIALS_KEY (or KILN_SIGNING_KEY) set: the current key seals again what they open',
    );
  }
  return current === undefined ? {} : { credentialsKeys: credentialsKeysOf(current, previous) };
}

/** What a refused value was, for the start-up error: quoted without credentials, unless it may be a secret. */
function describeValue(variable: string, value: string | undefined): string {
  if (value === undefined) return 'not set';
  return SECRET_VARIABLE.test(variable)
    ? `got ${value.length} characters, not shown`
    : `got "${redactAddress(value)}"`;
}

/** A comma-separated list setting, its first bad entry stopping start-up with the variable's name. */
function listSetting<T>(variable: string, value: string, parse: (list: string) => T[]): T[] {
  try {
    return parse(value);
  } catch (err) {
    throw new ConfigError(variable, (err as Error).message);
  }
}

/** Reads a PEM file named by `variable`; a missing, unreadable or non-PEM file stops start-up naming it. */
function readPem(variable: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(variable, `cannot read "${file}": ${(err as Error).message}`);
  }
  if (!text.includes('-----BEGIN ')) throw new ConfigError(variable, `"${file}" is not a PEM file`);
  return text;
}

/**
 * The S3 keys builders get for the shared cache: their own, both or neither. Never Kiln's own
 * storage keys: the solve request carries them, and a daemon keeps its requests in its build
 * history (anyone who reaches its Control API reads them) and hands a frontend image its
 * attributes as environment, so they would open every project's contexts and artifacts.
 * Without them the daemon uses its own credentials (environment, instance role).
 */
function builderCacheKeys(
  accessKeyId: string | undefined,
  secretAccessKey: string | undefined,
): { accessKeyId: string; secretAccessKey: string } | undefined {
  const pair = bothOrNeither(
    ['KILN_BUILD_CACHE_S3_ACCESS_KEY_ID', accessKeyId],
    ['KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY', secretAccessKey],
  );
  return pair && { accessKeyId: pair[0], secretAccessKey: pair[1] };
}

/**
 * Two settings that only work together: both values, or undefined for neither. One without the
 * other stops start-up naming the missing one, rather than failing later, far from its cause.
 */
function bothOrNeither<T>(a: [string, T | undefined], b: [string, T | undefined]): [T, T] | undefined {
  if (a[1] !== undefined && b[1] === undefined)
    throw new ConfigError(b[0], `required with ${a[0]} (not set)`);
  if (b[1] !== undefined && a[1] === undefined)
    throw new ConfigError(a[0], `required with ${b[0]} (not set)`);
  return a[1] !== undefined && b[1] !== undefined ? [a[1], b[1]] : undefined;
}

function builderTls(e: z.infer<typeof ENV>): BuilderTls | undefined {
  const tls: BuilderTls = {};
  const ca = readPem('KILN_BUILDER_TLS_CA', e.KILN_BUILDER_TLS_CA);
  const cert = readPem('KILN_BUILDER_TLS_CERT', e.KILN_BUILDER_TLS_CERT);
  const key = readPem('KILN_BUILDER_TLS_KEY', e.KILN_BUILDER_TLS_KEY);
  // One without the other would fail each handshake.
  const pair = bothOrNeither(['KILN_BUILDER_TLS_CERT', cert], ['KILN_BUILDER_TLS_KEY', key]);
  if (ca !== undefined) tls.ca = ca;
  if (pair) Object.assign(tls, { cert: pair[0], key: pair[1] });
  if (e.KILN_BUILDER_TLS_SERVER_NAME !== undefined) {
    if (ca === undefined && cert === undefined) {
      throw new ConfigError(
        'KILN_BUILDER_TLS_SERVER_NAME',
        'needs KILN_BUILDER_TLS_CA or KILN_BUILDER_TLS_CERT: without them builders are dialed without TLS',
      );
    }
    tls.serverName = e.KILN_BUILDER_TLS_SERVER_NAME;
  }
  return Object.keys(tls).length > 0 ? tls : undefined;
}

/** `10.96.0.10`, `127.0.0.1:5353`, `[::1]:53`: what dns.Resolver.setServers takes. */
function parseDnsServers(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((server) => {
      const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d{1,5}))?$/.exec(server);
      const host = m?.[1] ?? m?.[2] ?? '';
      const port = m?.[3] === undefined ? 53 : Number(m[3]);
      if (!isIP(host) || port < 1 || port > 65535) {
        throw new Error(`"${server}" is not an IP address with an optional port`);
      }
      return server;
    });
}

/**
 * `docker:///var/run/docker.sock,tcp://b:1234=4`: an optional `=N` sets that builder's
 * concurrency. `dns+tcp://name:port` stands for every address the name resolves to (a headless
 * Service's pods), each with that concurrency. `tls` applies to every `tcp://` and `dns+tcp://`
 * builder (the others are local sockets).
 */
function parseBuilders(
  value: string,
  defaultConcurrency: number,
  tls: BuilderTls | undefined,
): KilnConfig['builders'] {
  const builders = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const m = /^(.+?)(?:=(\d+))?$/.exec(item);
      const address = m?.[1] ?? item;
      // Quoted without credentials: an address may carry some.
      const shown = redactAddress(address);
      if (!/^(unix|tcp|docker|dns\+tcp):\/\//.test(address)) {
        throw new ConfigError(
          'KILN_BUILDERS',
          `"${shown}" is not a unix://, tcp://, dns+tcp:// or docker:// address`,
        );
      }
      if (address.startsWith('dns+tcp://') && !/^dns\+tcp:\/\/[A-Za-z0-9.-]+:\d{1,5}$/.test(address)) {
        throw new ConfigError('KILN_BUILDERS', `"${shown}" must be dns+tcp://name:port`);
      }
      const concurrency = m?.[2] ? Number(m[2]) : defaultConcurrency;
      if (concurrency < 1)
        throw new ConfigError('KILN_BUILDERS', `concurrency of ${shown} must be at least 1`);
      return tls && /^(dns\+)?tcp:\/\//.test(address)
        ? { address, concurrency, tls }
        : { address, concurrency };
    });
  if (builders.length === 0) throw new ConfigError('KILN_BUILDERS', 'no builder address given');
  return builders;
}
