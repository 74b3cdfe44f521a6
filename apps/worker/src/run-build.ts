/**
 * Runs one build (one attempt of one BullMQ job): lease a builder, mark the row running, fetch
 * and extract the context, solve, stream the export into storage, record the outcome.
 *
 * Outcomes:
 * - succeeded / canceled → returns.
 * - user errors (Dockerfile, RUN failure, unknown target, timeout, unsupported output, a spec
 *   no configured builder can serve) → the row is `failed` and an UnrecoverableError is thrown: BullMQ does not retry.
 * - infrastructure errors (builder unreachable or lost, storage failure, no healthy builder) →
 *   the attempt is recorded and the error rethrown, so BullMQ retries with backoff (on another
 *   builder when there is one); the row goes back to `queued` in between, or ends `failed` on
 *   the last attempt (then an UnrecoverableError).
 * - every builder full, or this worker stopping → HandBackError: the caller puts the job back
 *   without using up an attempt.
 * Every final write is guarded by this run's attempt: a run whose build was started again
 * elsewhere (it lost its lease) changes nothing.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import {
  BuildkitConnectionError,
  InvalidArgumentError,
  type LocalDir,
  PlainProgressRenderer,
  type RegistryAuth,
  SolveError,
  type SolveOptions,
  type SolveResult,
  type StatusEvent,
  UnsupportedError,
} from '@kiln/buildkit-client';
import {
  type AttemptEndInput,
  type AttemptGuard,
  type AttemptOutcome,
  artifactKey,
  type Build,
  type BuildCacheConfig,
  type BuildErrorCode,
  type BuildLifecycle,
  type BuildSecrets,
  type BuildSpec,
  type BuildSpecInput,
  BYTE_OUTPUT_TYPES,
  buildCacheOptions,
  buildCachePrefix,
  CACHE_EXPORT_OPTIONAL,
  type ContextLimits,
  type CredentialsKeys,
  cancelRequestKey,
  checkFrontendAllowed,
  countBuildEvent,
  dockerfileInContext,
  type ExtractSummary,
  extractContext,
  type FailureInput,
  FINAL_STATUSES,
  type FinalResult,
  frontendAttrsFor,
  gitContextAttr,
  gitSubdirOf,
  isAppError,
  type Logger,
  loadBuildSecrets,
  loadProjectQuotas,
  logKey,
  NO_TRACING,
  type ObjectStorage,
  type OutputType,
  observeExport,
  PROVENANCE_MODES,
  type Prisma,
  type ProjectQuotas,
  type PutResult,
  parseBuildSpec,
  platformsOf,
  provenanceKey,
  type RegistryCredentialStore,
  readFrontendDirective,
  recordsProvenance,
  specRequirements,
  stepsKey,
  storedBytesLeft,
  type Tracing,
} from '@kiln/core';
import { type Context, SpanStatusCode } from '@opentelemetry/api';
import { UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import { type ActiveBuilds, abortOf, BuildAbort } from './active-builds.js';
import {
  type BoundedContentStore,
  type CacheBound,
  cacheFullReason,
  cacheHeldBytes,
  latestCacheManifest,
  markCacheFull,
  recordCacheManifest,
  storageContentStore,
} from './build-cache-store.js';
import { BuildLog } from './build-log.js';
import type { Lease } from './builders/lease.js';
import { type BuilderPool, NoBuilderAvailableError, NoCapableBuilderError } from './builders/pool.js';
import { contextSharedKey } from './context-shared-key.js';
import { retryWhileDatabaseDown } from './db-retry.js';
import { frontendFor } from './frontend.js';
import { isProvenancePath, MAX_PROVENANCE_BYTES, PROVENANCE_FILE } from './provenance-files.js';
import { removeTree } from './remove-tree.js';
import { SolveSteps } from './solve-steps.js';
import { TarFileTap } from './tar-file-tap.js';

export interface RunBuildDeps {
  /** Every state change; its repository reads the build and its attempts. */
  lifecycle: BuildLifecycle;
  storage: ObjectStorage;
  /** Commands connection (log stream, leases, affinity). */
  redis: Redis;
  pool: BuilderPool;
  active: ActiveBuilds;
  logger: Logger;
  buildTimeoutSeconds: number;
  /** KILN_MAX_CONTEXT_*: what extracting a stored context may take. */
  contextLimits: Partial<ContextLimits>;
  /** KILN_ALLOWED_FRONTENDS: what a Dockerfile's `# syntax=` may name. */
  allowedFrontends: readonly string[];
  /** Defaults of the per-project quotas (a project's own values win). */
  quotas: ProjectQuotas;
  /** The project's registry logins, served to BuildKit by host (pushes and private pulls). */
  registryCredentials: RegistryCredentialStore;
  /** The shared build cache (KILN_BUILD_CACHE with S3 storage), if on. */
  buildCache?: BuildCacheConfig;
  /** What build secrets are sealed with in Redis (KilnConfig.credentialsKeys), if set. */
  credentialsKeys?: CredentialsKeys;
  /** Where per-build temp directories go; default os.tmpdir(). */
  tmpDir?: string;
  /** How long writes of a finished attempt are retried while PostgreSQL is away; default 10 minutes. */
  dbRetryMs?: number;
  /** Delay before a handed-back job (builders full, worker stopping) is tried again; default 1 s. */
  handBackDelayMs?: number;
  /** KILN_METRICS_MAX_PROJECTS (see @kiln/core's build-metrics.ts); default 0. */
  metricsMaxProjects?: number;
  /** Spans of each attempt (lease, context, solve and its steps, export); default NO_TRACING. */
  tracing?: Tracing;
  /** Steps a build's timeline lists (the rest are counted); default MAX_LISTED_STEPS. */
  maxListedSteps?: number;
}

/** Which BullMQ attempt this is: `attemptsMade` failed before it, `attempts` in all. */
export interface AttemptInfo {
  /** The job's priority: the build's place among its project's queued builds (fairness). */
  rank?: number;
  attemptsMade: number;
  attempts: number;
  /** The trace of the request that queued the build (the job's data), continued here. */
  traceparent?: string;
}

export interface RunBuildResult {
  status: 'succeeded' | 'canceled' | 'skipped';
  builder?: string;
}

/**
 * An attempt that failed on infrastructure and was put back to `queued`: BullMQ counts it and
 * retries. Its own class, carrying only the message, so that nothing in the cause it replaces
 * (a builder's ECONNRESET, a storage timeout) is taken for PostgreSQL being away.
 */
export class AttemptFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AttemptFailedError';
  }
}

/** The job goes back to the queue without counting as an attempt (builders full, worker stopping). */
export class HandBackError extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
    this.name = 'HandBackError';
  }
}

/** Output types whose export is one byte stream, stored as the artifact. */
const BYTE_OUTPUTS: ReadonlySet<OutputType> = new Set(BYTE_OUTPUT_TYPES);
/** What a solve left: an artifact in storage, or an image pushed to a registry. */
type Produced = { kind: 'artifact'; stored: PutResult } | { kind: 'image'; digest: string };

/** The name the session cache's content store goes by in the solve (`dest=`/`src=`). */
const SESSION_CACHE = 'kiln';

/**
 * How often a running build looks for a cancel request it did not hear of: the message goes to
 * subscribers connected at that moment only (a Redis restart, a partition of this worker).
 */
const CANCEL_CHECK_MS = 5000;

/** The build log's line for a cache marked full. */
const closedNote = (reason: string) =>
  `#0 kiln: the shared build cache takes no export until retention drops it: ${reason}\n`;

/** Picks BuildKit's provenance out of a tar export as it passes (the platform count read once, not per entry). */
function provenanceTap(platformCount: number): TarFileTap {
  return new TarFileTap((name) => isProvenancePath(name, platformCount), MAX_PROVENANCE_BYTES);
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

const SECRETS_GONE =
  "the build's secrets are no longer available (Redis lost them, or the build waited longer than they are kept): submit the build again";

/** The secret ids a stored spec names (their values live in Redis, see loadBuildSecrets). */
function secretIdsOf(spec: Prisma.JsonValue): string[] {
  const ids = (spec as { secrets?: unknown } | null)?.secrets;
  return Array.isArray(ids) && ids.every((id) => typeof id === 'string') ? ids : [];
}

/** The stored spec: normally the normalized BuildSpec the API wrote; raw input is parsed as the API would. */
export function readSpec(value: Prisma.JsonValue): BuildSpec {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('the stored build spec is not an object');
  }
  const raw = value as Record<string, unknown>;
  const output = raw.output as Record<string, unknown> | undefined;
  const normalized =
    typeof output === 'object' &&
    output !== null &&
    typeof output.type === 'string' &&
    typeof output.dest === 'string' &&
    typeof raw.file === 'string';
  if (!normalized) return parseBuildSpec(raw as BuildSpecInput);
  const record = (v: unknown): Record<string, string> =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, string>) : {};
  const spec: BuildSpec = {
    output: { type: output.type as OutputType, dest: output.dest as string, attrs: record(output.attrs) },
    file: raw.file as string,
    buildArgs: record(raw.buildArgs),
    labels: record(raw.labels),
    noCache: raw.noCache === true,
    network: raw.network === 'none' ? 'none' : 'default',
  };
  if (typeof raw.target === 'string' && raw.target !== '') spec.target = raw.target;
  if (typeof raw.platform === 'string' && raw.platform !== '') spec.platform = raw.platform;
  const provenance = PROVENANCE_MODES.find((mode) => mode === raw.provenance);
  if (provenance) spec.provenance = provenance;
  if (typeof raw.sourceDateEpoch === 'number') spec.sourceDateEpoch = raw.sourceDateEpoch;
  const secrets = secretIdsOf(value);
  if (secrets.length > 0) spec.secrets = secrets;
  const file = dockerfileInContext(spec.file);
  if (file === undefined)
    throw new Error(`the stored spec's Dockerfile path "${spec.file}" is not a file inside the context`);
  spec.file = file;
  return spec;
}

export async function runBuild(
  deps: RunBuildDeps,
  buildId: string,
  attempt: AttemptInfo,
): Promise<RunBuildResult> {
  const build = await deps.lifecycle.repo.byId(buildId);
  if (!build) {
    deps.logger.warn({ buildId }, 'job for a build that does not exist: nothing to do');
    return { status: 'skipped' };
  }
  if (FINAL_STATUSES.has(build.status)) {
    deps.logger.info({ buildId, status: build.status }, 'build already finished: nothing to do');
    return { status: 'skipped' };
  }
  // A second job for a build another worker is running (e.g. the reconciler re-enqueued it while
  // Redis had lost its job): running it too would complete it twice. Should that worker die,
  // its lease expires and the reconciler takes the build back.
  if (await runsWithLiveLease(deps.pool, build)) {
    deps.logger.info(
      { buildId, attempt: build.attempts, builder: build.builder },
      'build is running on another worker (its builder lease is live): nothing to do',
    );
    return { status: 'skipped' };
  }
  return new BuildRun(deps, build, attempt).run();
}

/** Whether a run holds the build now: it is running, and its builder's lease of it is live. */
export async function runsWithLiveLease(
  pool: Pick<BuilderPool, 'leaseExpiry' | 'now'>,
  build: Pick<Build, 'id' | 'status' | 'builder'>,
): Promise<boolean> {
  if (build.status !== 'running' || !build.builder) return false;
  const expiry = await pool.leaseExpiry(build.builder, build.id);
  return expiry !== undefined && expiry > (await pool.now());
}

class BuildRun {
  private readonly logger: Logger;
  private readonly controller: AbortController;
  private tmp = '';
  private log: BuildLog | undefined;
  private lease: Lease | undefined;
  /** This run's attempt, once started. */
  private current: { id: string; number: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private secrets: BuildSecrets | undefined;
  private registryLogins: RegistryAuth | undefined;
  private quotas: ProjectQuotas | undefined;
  /** The session cache's store for this build's solve, when the cache goes over the session. */
  private sessionCache: BoundedContentStore | undefined;
  /** Whether this build's solve exports the project's shared cache. */
  private cacheExported = false;
  /** The solve has returned; storage still has the artifact's last bytes to take. */
  private storing = false;
  /** The project's stored bytes when this run read its quotas: what the export may add to. */
  private storedBytes = 0;
  private readonly steps: SolveSteps;
  /** The export into storage: bytes passed, and the time (ms) of its first byte and of storage settling. */
  private readonly exported = { bytes: 0, first: 0, settled: 0 };
  private readonly tracing: Tracing;
  /** The current span's context: the request's, then this attempt's, the solve's while it runs. */
  private trace: Context;

  constructor(
    private readonly deps: RunBuildDeps,
    private readonly build: Build,
    private readonly attempt: AttemptInfo,
  ) {
    this.logger = deps.logger.child({ buildId: build.id });
    // Registered first, so a cancel arriving while the builder is leased is not lost.
    this.controller = deps.active.register(build.id);
    this.tracing = deps.tracing ?? NO_TRACING;
    this.steps = new SolveSteps(deps.maxListedSteps);
    this.trace = this.tracing.continueFrom(attempt.traceparent);
  }

  private get id(): string {
    return this.build.id;
  }

  async run(): Promise<RunBuildResult> {
    const queued = this.trace;
    if (this.attempt.attemptsMade === 0) {
      // The wait from the request to this pick-up (a retry's wait is its backoff, not the queue's).
      this.tracing.start('queue wait', queued, { startTime: this.build.createdAt }).span.end();
    }
    return this.tracing.run(
      'build attempt',
      queued,
      async (span, context) => {
        this.trace = context;
        const result = await this.runAttempt();
        span.setAttribute('kiln.build.result', result.status);
        return result;
      },
      {
        attributes: {
          'kiln.build.id': this.id,
          'kiln.project.id': this.build.projectId,
          'kiln.attempt': this.attempt.attemptsMade + 1,
        },
      },
    );
  }

  private async runAttempt(): Promise<RunBuildResult> {
    let cancelCheck: NodeJS.Timeout | undefined;
    try {
      // First: the log's budget is one of them.
      ({ quotas: this.quotas, storedBytes: this.storedBytes } = await loadProjectQuotas(
        this.deps.lifecycle.repo.prisma,
        this.deps.quotas,
        this.build.projectId,
      ));
      this.tmp = await mkdtemp(path.join(this.deps.tmpDir ?? tmpdir(), 'kiln-build-'));
      this.log = new BuildLog(this.deps.redis, this.id, path.join(this.tmp, 'build.log'), this.logger, {
        maxBytes: this.quotas.logBytes,
      });
      await this.log.continueFrom(this.deps.storage, logKey(this.id)).catch((err: unknown) => {
        this.logger.warn({ err: messageOf(err) }, 'could not read the log of earlier attempts');
      });
      // A cancel asked while no worker ran this build (its worker died) reached nobody; one
      // published while this worker's subscriber was reconnecting did not reach it either.
      const cancelAsked = async () => {
        if (await this.deps.redis.exists(cancelRequestKey(this.id))) {
          this.controller.abort(new BuildAbort('cancel', 'build canceled'));
        }
      };
      await cancelAsked();
      cancelCheck = setInterval(() => {
        cancelAsked().catch(() => {});
      }, CANCEL_CHECK_MS);
      cancelCheck.unref();
      return await this.execute();
    } finally {
      clearInterval(cancelCheck);
      clearTimeout(this.timer);
      await this.log?.close().catch(() => {});
      await this.lease?.release().catch((err: unknown) => {
        this.logger.warn({ err: messageOf(err) }, 'releasing the builder lease failed (it will expire)');
      });
      this.deps.active.unregister(this.id, this.controller);
      const { vertices, cached } = this.steps.counts();
      if (vertices > 0) await countBuildEvent(this.deps.redis, { kind: 'solved', vertices, cached });
      if (this.tmp) {
        await removeTree(this.tmp).catch((err: unknown) => {
          this.logger.warn({ dir: this.tmp, err: messageOf(err) }, 'could not remove the build directory');
        });
      }
    }
  }

  /** Build output (bounded by the log budget). */
  private write(text: string): void {
    this.log?.write(text);
  }

  /** Kiln's own lines about the attempt and its end: shown even after the output was truncated. */
  private note(text: string): void {
    this.log?.note(text);
  }

  private async execute(): Promise<RunBuildResult> {
    let spec: BuildSpec;
    try {
      spec = readSpec(this.build.spec);
    } catch (err) {
      return this.fail('invalid_spec', messageOf(err));
    }
    if (!BYTE_OUTPUTS.has(spec.output.type) && spec.output.type !== 'image') {
      return this.fail(
        'unsupported_output',
        `output type "${spec.output.type}" is not supported yet: use type=tar (or oci/docker/image), e.g. --output type=tar,dest=${spec.output.dest}`,
      );
    }
    if (abortOf(this.controller.signal)?.kind === 'cancel') return this.canceled();
    if (spec.secrets) {
      // Before a builder is leased; a build never runs without the secrets it names.
      try {
        this.secrets = await loadBuildSecrets(
          this.deps.redis,
          this.id,
          spec.secrets,
          this.deps.credentialsKeys,
        );
      } catch (err) {
        return this.infrastructure(err, 'infrastructure');
      }
      if (!this.secrets) return this.fail('secrets_unavailable', SECRETS_GONE);
    }
    // Read before the attempt starts, like the quotas: PostgreSQL away here hands the job back
    // uncounted, where inside the solve it would fail the attempt and blame its builder.
    this.registryLogins = await this.registryAuth();

    try {
      const avoid = await this.failedBuilders();
      this.lease = await this.tracing.run('lease builder', this.trace, async (span) => {
        const lease = await this.deps.pool.acquire({
          buildId: this.id,
          projectId: this.build.projectId,
          avoid,
          projectLimit: this.quotas?.runningBuilds ?? 0,
          rank: this.attempt.rank ?? 1,
          requires: specRequirements(spec, { gitSubdir: gitSubdirOf(this.build.gitRef) !== '' }),
        });
        span.setAttribute('kiln.builder', lease.address);
        return lease;
      });
    } catch (err) {
      if (err instanceof NoCapableBuilderError) return this.fail('no_capable_builder', err.message);
      if (err instanceof NoBuilderAvailableError && err.reason === 'capacity') {
        throw new HandBackError(err.message, this.handBackDelay());
      }
      if (err instanceof NoBuilderAvailableError) return this.infrastructure(err, 'no_builder_available');
      throw err;
    }

    if (!(await this.markRunning(this.lease.address))) {
      this.logger.info('build was finished, canceled or taken by another worker meanwhile: nothing to do');
      return { status: 'skipped' };
    }
    const attempt = this.current?.number ?? 0;
    this.lease.heldFor(
      () => this.deps.lifecycle.repo.runsAttempt(this.id, attempt),
      () => {
        // The live log is the build's, and the newer attempt's now.
        this.log?.detach();
        this.controller.abort(
          new BuildAbort(
            'superseded',
            `attempt ${attempt} is no longer the build's (started again, or taken back): stopped`,
          ),
        );
      },
    );
    const timeoutS = this.deps.buildTimeoutSeconds;
    this.timer = setTimeout(() => {
      this.controller.abort(
        new BuildAbort(
          'timeout',
          `the build exceeded its time limit of ${timeoutS} s (KILN_BUILD_TIMEOUT_SECONDS)`,
        ),
      );
    }, timeoutS * 1000);
    this.timer.unref();

    let produced: Produced | undefined;
    const tap = recordsProvenance(spec) ? provenanceTap(platformsOf(spec).length) : undefined;
    let failure: string | undefined;
    try {
      produced = await this.solve(spec, this.lease, tap);
      if (tap && produced.kind === 'artifact')
        failure = await this.storeProvenance(tap, spec, produced.stored.key);
    } catch (err) {
      // Stored, but its provenance could not be: this attempt's artifact goes with it.
      if (produced?.kind === 'artifact') await this.deleteArtifact(produced.stored.key);
      return this.handleError(err, this.lease);
    }
    if (failure && produced.kind === 'artifact') {
      await this.deleteArtifact(produced.stored.key);
      return this.fail('build_failed', failure);
    }
    return this.succeed(produced, spec, this.lease);
  }

  /**
   * Nothing of an attempt that does not succeed the build stays stored, artifact nor provenance:
   * no row points at them, so retention would never find them and the project's stored bytes
   * would never count them.
   */
  private async deleteArtifact(key: string): Promise<void> {
    for (const object of [key, provenanceKey(key)]) {
      await this.deps.storage.delete(object).catch((err: unknown) => {
        this.logger.warn({ key: object, err: messageOf(err) }, 'could not delete the artifact');
      });
    }
  }

  private handBackDelay(): number {
    const base = this.deps.handBackDelayMs ?? 1000;
    return Math.round(base * (1 + Math.random()));
  }

  /** Builders on which an earlier attempt of this build failed for infrastructure reasons. */
  private failedBuilders(): Promise<string[]> {
    return this.deps.lifecycle.repo.buildersThatFailed(this.id);
  }

  /**
   * Marks the row running and opens this attempt; false when the row changed since this run read
   * it: final (e.g. canceled meanwhile), or taken by another worker's attempt.
   */
  private async markRunning(builder: string): Promise<boolean> {
    const attempt = await this.deps.lifecycle.start(this.build, builder);
    if (!attempt) return false;
    this.current = { id: attempt.id, number: attempt.number };
    this.logger.info({ builder, attempt: attempt.number }, 'build started');
    this.note(`#0 kiln: attempt ${attempt.number} on ${builder}\n`);
    return true;
  }

  /**
   * Keeps Kiln's own copy of the provenance BuildKit wrote into the tar export, beside the
   * artifact: the statement, or for several platforms one JSON object of them by platform
   * directory (`{"linux_amd64": {...}, "linux_386": {...}}`, BuildKit's per-platform layout).
   * Returns why the build must fail, or undefined once it is stored.
   */
  private async storeProvenance(
    tap: TarFileTap,
    spec: BuildSpec,
    artifact: string,
  ): Promise<string | undefined> {
    if (tap.oversized) {
      return `the provenance in the export is larger than ${MAX_PROVENANCE_BYTES} bytes: not kept`;
    }
    const platforms = platformsOf(spec);
    let statement: Buffer | undefined;
    if (platforms.length > 1) {
      const byPlatform = [...tap.files];
      if (byPlatform.length === platforms.length) {
        const parts = byPlatform.map(
          ([name, data]) => `${JSON.stringify(name.split('/')[0])}:${data.toString('utf8')}`,
        );
        statement = Buffer.from(`{${parts.join(',')}}`);
      }
    } else statement = tap.files.get(PROVENANCE_FILE);
    if (!statement) {
      return `provenance was asked for, but the builder wrote no ${PROVENANCE_FILE} for every platform into the tar export (BuildKit writes it from v0.11)`;
    }
    await this.deps.storage.put(provenanceKey(artifact), Readable.from([statement]), {
      contentType: 'application/json',
      signal: this.controller.signal,
    });
    this.note(`#0 kiln: kept the provenance (${statement.length} bytes)\n`);
    return undefined;
  }

  /**
   * The project's registry logins for BuildKit, by the host it asks for; none for other hosts.
   * Loaded once per build: a login changed meanwhile applies from the next build.
   */
  private async registryAuth(): Promise<RegistryAuth | undefined> {
    const logins = await this.deps.registryCredentials.forBuild(this.build.projectId, (host) => {
      this.logger.warn({ host }, 'registry credentials do not decrypt (was the credentials key changed?)');
      // The owner sees why a push or a private FROM is refused, and what mends it.
      this.note(
        `#0 kiln: the project's login to ${host} cannot be read (this Kiln's credentials key changed): going to ${host} without it; set it again with PUT /v1/registry-credentials/${host}\n`,
      );
    });
    return logins.size > 0 ? (host) => logins.get(host) : undefined;
  }

  /**
   * The project's shared cache, imported and exported in the solve, on builders whose BuildKit has
   * the backend (s3 from v0.11, local on any standalone buildkitd; dockerd's moby worker has
   * neither, and builds without it).
   * With local storage the worker serves the cache over the session (build-cache-store.ts) and
   * imports the manifest the last export recorded. A cache marked full, or one the project's
   * quota leaves no room for, is imported but not exported.
   */
  private async cacheOptions(lease: Lease): Promise<Partial<SolveOptions>> {
    const cache = this.deps.buildCache;
    if (!cache) return {};
    const prefix = buildCachePrefix(this.build.projectId);
    const caps = await this.deps.pool.capabilitiesOf(lease.address);
    const backend = cache.kind === 's3' ? 'cache-export:s3' : 'cache-export:local';
    if (!caps?.features.includes(backend) || !caps.features.includes('cache-export:ignore-error')) return {};
    this.note(`#0 kiln: shared build cache ${prefix}\n`);
    const bound = this.cacheBound(0);
    const full = await cacheFullReason(this.deps.storage, prefix).catch(
      (err: unknown) => `its full mark could not be read (${messageOf(err)})`,
    );
    if (full) this.note(closedNote(full));
    // No room: the cache gives way (marked, so retention drops what it holds), not the build.
    const noRoom = !full && bound !== undefined && bound.bytes <= 0;
    if (noRoom && !(await this.closeCacheIfOver(prefix, bound))) {
      this.note(`#0 kiln: the shared build cache takes no export: no room is left: ${bound.why}\n`);
    }
    const closed = full !== undefined || noRoom;
    this.cacheExported = !closed;
    if (cache.kind === 's3') {
      const { cacheImports, cacheExports } = buildCacheOptions(cache, this.build.projectId);
      return { cacheImports, ...(closed ? {} : { cacheExports }) };
    }
    const latest = await latestCacheManifest(this.deps.storage, prefix);
    this.sessionCache = storageContentStore(this.deps.storage, prefix, bound);
    return {
      contentStores: { [SESSION_CACHE]: this.sessionCache },
      ...(closed
        ? {}
        : {
            cacheExports: [
              { type: 'local', attrs: { dest: SESSION_CACHE, mode: 'max', ...CACHE_EXPORT_OPTIONAL } },
            ],
          }),
      ...(latest ? { cacheImports: [{ type: 'local', attrs: { src: SESSION_CACHE, digest: latest } }] } : {}),
    };
  }

  /**
   * What the project's cache may hold: KILN_BUILD_CACHE_MAX_BYTES, and what its stored-bytes quota
   * leaves beside its contexts and artifacts (as read when this run began, plus `added` bytes
   * this run exported since). Undefined: no bound.
   */
  private cacheBound(added: number): CacheBound | undefined {
    const bounds: CacheBound[] = [];
    const maxBytes = this.deps.buildCache?.maxBytes ?? 0;
    if (maxBytes > 0)
      bounds.push({ bytes: maxBytes, why: `its bound of ${maxBytes} bytes (KILN_BUILD_CACHE_MAX_BYTES)` });
    const stored = this.storedBytes + added;
    const left = this.quotas ? storedBytesLeft(this.quotas, stored) : null;
    if (left !== null) {
      bounds.push({
        bytes: Math.max(0, left),
        why: `what the project's limit (stored bytes: ${this.quotas?.storedBytes}) leaves beside the ${stored} bytes of its contexts and artifacts`,
      });
    }
    return bounds.sort((x, y) => x.bytes - y.bytes)[0];
  }

  /**
   * After a solve: a session cache export's manifest becomes what the next build imports, and a
   * cache the export took past its bound is marked full. With S3 the builder wrote the cache
   * itself, so nothing could refuse a blob on the way; this bounds it to one build's export over.
   */
  private async recordCache(result: SolveResult): Promise<void> {
    if (!this.cacheExported) return;
    const prefix = buildCachePrefix(this.build.projectId);
    const refusal = this.sessionCache?.refusal;
    if (refusal) this.note(`#0 kiln: the shared build cache was not exported: ${refusal}\n`);
    const manifest = result.exporterResponse['cache.manifest'];
    if (this.deps.buildCache?.kind === 'session' && manifest && !refusal) {
      await recordCacheManifest(this.deps.storage, prefix, manifest).catch((err: unknown) =>
        this.logger.warn({ err: messageOf(err) }, 'recording the build cache manifest failed'),
      );
    }
    // The artifact this run exported is stored now too (an image push stores nothing).
    const bound = this.cacheBound(this.exported.bytes);
    if (bound && !refusal) await this.closeCacheIfOver(prefix, bound);
  }

  /**
   * Marks the cache full, saying why in the build log, when it holds more than `bound`: one LIST
   * request per 1,000 of its objects. Whether it did; a failure leaves it to the next build's
   * check or retention's pass.
   */
  private async closeCacheIfOver(prefix: string, bound: CacheBound): Promise<boolean> {
    try {
      const held = await cacheHeldBytes(this.deps.storage, prefix);
      if (held <= bound.bytes) return false;
      const reason = `it holds ${held} bytes, past ${bound.why}`;
      await markCacheFull(this.deps.storage, prefix, reason);
      this.note(closedNote(reason));
      return true;
    } catch (err) {
      this.logger.warn({ err: messageOf(err) }, 'checking the build cache against its bound failed');
      return false;
    }
  }

  /** The solve in a span, with a span per step BuildKit reported and one for the export into storage. */
  private async solve(spec: BuildSpec, lease: Lease, tap?: TarFileTap): Promise<Produced> {
    const sources = await this.tracing.run('fetch context', this.trace, () => this.contextSources(spec));
    const attempt = this.trace;
    try {
      return await this.tracing.run(
        'solve',
        attempt,
        (_span, context) => {
          const traceparent = this.tracing.traceparent(context);
          this.trace = context;
          return this.solveWith(spec, lease, sources, traceparent ? { traceparent } : undefined, tap);
        },
        { attributes: { 'kiln.builder': lease.address } },
      );
    } finally {
      const solveContext = this.trace;
      this.trace = attempt;
      this.traceSteps(solveContext);
    }
  }

  /** A span for each step the status stream ended (cached ones marked) and one for the export. */
  private traceSteps(solveContext: Context): void {
    for (const v of this.steps.list()) {
      const end = v.completed ?? new Date();
      const { span } = this.tracing.start(v.name, solveContext, {
        startTime: v.started ?? end,
        attributes: { 'buildkit.vertex.digest': v.digest, 'buildkit.cached': v.cached },
      });
      if (v.error) span.setStatus({ code: SpanStatusCode.ERROR, message: v.error });
      span.end(end);
    }
    const { bytes, first, settled } = this.exported;
    if (first > 0 && settled >= first) {
      const options = { startTime: new Date(first), attributes: { 'kiln.export.bytes': bytes } };
      this.tracing.start('export to storage', this.trace, options).span.end(new Date(settled));
    }
  }

  private async solveWith(
    spec: BuildSpec,
    lease: Lease,
    sources: Awaited<ReturnType<BuildRun['contextSources']>>,
    metadata: Record<string, string> | undefined,
    tap?: TarFileTap,
  ): Promise<Produced> {
    const { storage } = this.deps;
    const signal = this.controller.signal;
    const client = await lease.client();
    const renderer = new PlainProgressRenderer((text) => this.write(text));
    const onStatus = (event: StatusEvent) => {
      renderer.render(event);
      this.steps.record(event);
    };
    const cache = await this.cacheOptions(lease);
    const common = {
      ...cache,
      ...sources,
      ...(this.secrets ? { secrets: this.secrets } : {}),
      ...(this.registryLogins ? { registryAuth: this.registryLogins } : {}),
      ...(metadata ? { metadata } : {}),
      signal,
    };
    if (spec.output.type === 'image') {
      const result = await client.solve(
        { ...common, exports: [{ type: 'image', attrs: spec.output.attrs }] },
        onStatus,
      );
      await this.recordCache(result);
      const digest = result.exporterResponse['containerimage.digest'];
      if (!digest) throw new Error('the builder pushed the image but reported no digest');
      return { kind: 'image', digest };
    }

    // Export → PassThrough → storage.put: backpressure reaches the daemon; put hashes and counts.
    const output = this.exportStream(tap);
    // The signal: the build's time limit and a cancel also bound what storage takes after the solve.
    const put = storage.put(artifactKey(this.id, this.current?.number ?? 0, spec.output.dest), output, {
      contentType: 'application/x-tar',
      signal,
    });
    let solving = true;
    const settled = () => {
      this.exported.settled = Date.now();
    };
    put.then(settled, settled);
    put.catch((err: unknown) => {
      // A put failing while BuildKit still sends is an infrastructure error: stop the build.
      if (solving && !signal.aborted) {
        this.controller.abort(
          new BuildAbort('storage', `storing the artifact failed: ${messageOf(err)}`, { cause: err }),
        );
      }
    });
    try {
      const result = await client.solve(
        {
          ...common,
          exports: [{ type: spec.output.type as 'tar' | 'oci' | 'docker', attrs: spec.output.attrs, output }],
        },
        onStatus,
      );
      await this.recordCache(result);
    } catch (err) {
      solving = false;
      // Storage failing mid-export destroys `output` (lib-storage aborts its reader), and BuildKit
      // then fails the export ("exporting to client: … aborted") seconds before the put's own
      // rejection (the SDK retries the part first). The same holds when the daemon drops the
      // export stream. Neither is the build's fault: classify it before the SolveError is.
      const broken = output.errored;
      if (broken && !signal.aborted) {
        this.controller.abort(
          new BuildAbort(
            'storage',
            `storing the artifact failed: the export stream broke (${messageOf(broken)})`,
            {
              cause: broken,
            },
          ),
        );
      }
      output.destroy(err instanceof Error ? err : new Error(String(err)));
      // The export may have completed before the solve failed: canceled or timed out while
      // BuildKit exported the cache, or a cache export refused.
      const stored = await put.catch(() => undefined);
      if (stored) await this.deleteArtifact(stored.key);
      throw err;
    }
    solving = false;
    this.storing = true;
    // The client ends `output` when the export is complete. A tar, oci or docker export always
    // holds something (a tar's end blocks at least), so a solve answered without one is the
    // daemon's fault (it ignored the exporter, or lost the export), retried elsewhere: never a
    // succeeded build with an empty artifact.
    if (!output.writableEnded) {
      output.end();
      const stored = await put.catch(() => undefined);
      if (stored) await this.deleteArtifact(stored.key);
      throw new ExportMissingError(`the builder ${lease.address} finished the build without exporting it`);
    }
    return { kind: 'artifact', stored: await put };
  }

  /**
   * The stream the export goes through into storage, shown to `tap` on the way. Past the project's
   * artifact-bytes quota, or past what its stored-bytes quota leaves (read when the run began:
   * builds of one project exporting at once may each use that room), it stops the build (the
   * daemon sees the session end) and errors, so storage keeps nothing of it. It counts the bytes
   * and times the first one for the export throughput metric.
   */
  private exportStream(tap: TarFileTap | undefined): PassThrough {
    const perBuild = this.quotas?.artifactBytes ?? 0;
    const left = this.quotas ? storedBytesLeft(this.quotas, this.storedBytes) : null;
    const byStored = left !== null && (perBuild === 0 || left < perBuild);
    const limit = byStored ? Math.max(0, left ?? 0) : perBuild;
    const why = byStored
      ? `what the project's stored bytes (${this.storedBytes}) leave of its limit (stored bytes: ${this.quotas?.storedBytes})`
      : "the project's limit (artifact bytes per build)";
    const exported = this.exported;
    return new PassThrough({
      transform: (chunk: Buffer, _encoding, done) => {
        if (exported.bytes === 0) exported.first = Date.now();
        exported.bytes += chunk.length;
        tap?.write(chunk);
        if ((limit === 0 && !byStored) || exported.bytes <= limit) return done(null, chunk);
        const abort = new BuildAbort(
          'output_too_large',
          `the artifact is larger than ${limit} bytes, ${why}; nothing was stored`,
        );
        this.controller.abort(abort);
        done(abort);
      },
    });
  }

  /**
   * What the frontend reads the context and Dockerfile from. An uploaded context is extracted
   * into the build's temp dir and served over the session. A git build sends nothing: BuildKit
   * fetches the repository itself (pinned to the commit when known) and reads the Dockerfile
   * from it, so `filename` is its path in the repository rather than in a local dir.
   */
  private async contextSources(spec: BuildSpec): Promise<{
    frontend: string;
    frontendAttrs: Record<string, string>;
    localDirs?: Record<string, LocalDir>;
    sharedKey?: string;
  }> {
    const { gitUrl, gitRef, gitCommit, contextKey } = this.build;
    if (gitUrl) {
      const context = gitContextAttr({ gitUrl, gitRef, gitCommit });
      this.note(`#0 kiln: git context ${context}
`);
      // Nobody checked this Dockerfile's `# syntax=` (BuildKit fetches it): built as one without.
      const { frontend, attrs } = frontendFor({ kind: 'none' });
      return {
        frontend,
        frontendAttrs: {
          ...frontendAttrsFor(spec, this.build.projectId),
          filename: spec.file,
          context,
          ...attrs,
        },
      };
    }
    // Context: stored tar → private temp dir.
    const signal = this.controller.signal;
    const contextDir = path.join(this.tmp, 'context');
    if (!contextKey) throw new Error(`build ${this.id} has neither a stored context nor a git repository`);
    const object = await this.deps.storage.get(contextKey);
    const stopReading = () => object.body.destroy(new Error('build aborted'));
    signal.addEventListener('abort', stopReading, { once: true });
    let extracted: ExtractSummary;
    try {
      if (signal.aborted) stopReading();
      // With the operator's limits: an object the API did not validate (or validated under others) stays bounded.
      extracted = await extractContext(object.body, contextDir, { limits: this.deps.contextLimits });
    } finally {
      signal.removeEventListener('abort', stopReading);
    }
    // readSpec made spec.file a normalized path inside the context (dockerfileInContext).
    const dockerfileDir = path.join(contextDir, ...path.posix.dirname(spec.file).split('/'));
    // Checked again on the file BuildKit will read: the API's check saw the upload's bytes, and
    // not what a hard link names; a context reused by digest was checked under older settings.
    const directive = await readFrontendDirective(contextDir, spec.file);
    checkFrontendAllowed(directive, this.deps.allowedFrontends);
    const { frontend, attrs } = frontendFor(directive);
    return {
      frontend,
      frontendAttrs: { ...frontendAttrsFor(spec, this.build.projectId), ...attrs },
      localDirs: {
        context: {
          path: contextDir,
          xattrsOf: (relPath) => extracted.xattrs.get(relPath),
          permissionsOf: (relPath) => extracted.permissions.get(relPath),
        },
        dockerfile: { path: dockerfileDir },
      },
      sharedKey: contextSharedKey(this.build.projectId, contextKey, spec.file),
    };
  }

  private async handleError(err: unknown, lease: Lease): Promise<RunBuildResult> {
    const abort = abortOf(this.controller.signal);
    switch (abort?.kind) {
      case 'cancel':
        return this.canceled();
      case 'timeout':
        // The build was done in time; storage was not.
        if (this.storing) {
          return this.infrastructure(
            new Error(`storing the artifact did not end within the build's time limit (${abort.message})`),
            'infrastructure',
          );
        }
        // A builder that hung, or left the network without a word, runs out the clock too: ask
        // it before blaming the build.
        if (!(await this.deps.pool.probe(lease.address))) {
          return this.infrastructure(
            new Error(`the builder ${lease.address} stopped answering during the build (${abort.message})`),
            'infrastructure',
          );
        }
        return this.fail('timeout', abort.message);
      case 'shutdown':
        return this.handBack(abort.message);
      case 'storage':
        return this.infrastructure(abort, 'infrastructure');
      case 'output_too_large':
        return this.fail('output_too_large', abort.message);
      case 'superseded':
        // The build, its log and its final state are the newer attempt's.
        this.logger.warn({ builder: lease.address }, abort.message);
        return { status: 'skipped', builder: lease.address };
    }
    if (err instanceof SolveError) {
      // A daemon that died mid-build can also surface as a failed solve: ask it before blaming the build.
      if (!(await this.deps.pool.probe(lease.address))) {
        return this.infrastructure(
          new Error(`lost the builder ${lease.address} during the build: ${err.message}`, { cause: err }),
          'infrastructure',
        );
      }
      return this.fail('build_failed', explainSolveFailure(err.message));
    }
    if (err instanceof BuildkitConnectionError) {
      this.deps.pool.reportFailure(lease.address, err);
      return this.infrastructure(err, 'infrastructure');
    }
    if (err instanceof ExportMissingError) return this.infrastructure(err, 'infrastructure');
    if (err instanceof InvalidArgumentError || err instanceof UnsupportedError) {
      return this.fail('build_failed', err.message);
    }
    // The context or its Dockerfile as the worker finds them: the user's to fix, not retried.
    if (
      isAppError(err) &&
      (err.code === 'invalid_context' || err.code === 'context_too_large' || err.code === 'invalid_spec')
    )
      return this.fail(err.code, err.message);
    if (isAppError(err) && err.code === 'not_found') {
      return this.fail(
        'context_missing',
        `the build context ${this.build.contextKey} is missing from storage`,
      );
    }
    return this.infrastructure(err, 'infrastructure');
  }

  /** A write recording what this attempt did: retried while PostgreSQL is away (db-retry.ts). */
  private db<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retryWhileDatabaseDown(what, fn, {
      logger: this.logger,
      ...(this.deps.dbRetryMs !== undefined ? { maxMs: this.deps.dbRetryMs } : {}),
      giveUp: () => this.deps.active.isStopping,
    });
  }

  /** How this run's own attempt ended, for a final transition (null: it never started one). */
  private attemptEnd(outcome: AttemptOutcome): AttemptEndInput | null {
    return this.current ? { attemptId: this.current.id, outcome } : null;
  }

  /**
   * A final write only while the row is still at this run's attempt: a run that lost its lease
   * (cut off from Redis) must not end a build another worker has started again.
   */
  private attemptGuard(): AttemptGuard | undefined {
    return this.current ? { attempts: this.current.number } : undefined;
  }

  /** This run's attempt failed, and with it the build. */
  private failure(code: BuildErrorCode, message: string): FailureInput {
    const guard = this.attemptGuard();
    return { code, message, attempt: this.attemptEnd('failed'), ...(guard ? { guard } : {}) };
  }

  /**
   * Whether the row has moved on to a newer attempt, another worker's after this one lost its
   * lease: the log and steps at the build's keys are that attempt's then, not this run's to
   * overwrite. (Only a newer attempt started and ended between this read and the write could
   * still lose them.) A failed read counts as not superseded, as before this check.
   */
  private async superseded(): Promise<boolean> {
    const current = this.current;
    if (!current) return false;
    const attempts = await this.deps.lifecycle.repo.attemptsOf(this.id).catch(() => null);
    return attempts !== null && attempts > current.number;
  }

  /** Stores the steps of this attempt's solve for the build page's timeline (stepsKey); never throws. */
  private async storeSteps(): Promise<void> {
    const stored = this.steps.toStored();
    if (stored.steps.length === 0) return;
    await this.deps.storage
      .put(stepsKey(this.id), Readable.from([Buffer.from(JSON.stringify(stored))]), {
        contentType: 'application/json',
      })
      .catch((err: unknown) => this.logger.warn({ err: messageOf(err) }, 'storing the build steps failed'));
  }

  /** Stores the log object (a later attempt continues it; see BuildLog.continueFrom); its key, or null. */
  private async storeLog(): Promise<string | null> {
    if (!this.log) return null;
    try {
      await this.log.store(this.deps.storage, logKey(this.id));
      return logKey(this.id);
    } catch (err) {
      this.logger.warn({ err: messageOf(err) }, 'storing the build log failed');
      return null;
    }
  }

  /**
   * Stores the log and steps (unless a newer attempt has the build), then applies a final
   * transition (which ends the live log and deletes the secrets). Returns the row's status after
   * it, and whether it was this run's to make: another status when the row changed meanwhile (a
   * cancel won, or another worker runs the build again).
   */
  private async finalize(
    transition: (change: { logKey?: string }) => Promise<FinalResult>,
  ): Promise<{ status: string; applied: boolean }> {
    const mine = !(await this.superseded());
    if (mine) await this.storeSteps();
    // Superseded, the row still names the build's log: the newer attempt stores it there, and a
    // cancel (unguarded by attempt) may yet apply from this run.
    const stored = mine ? await this.storeLog() : logKey(this.id);
    const result = await this.db('final state', () => transition(stored ? { logKey: stored } : {}));
    if (!result.applied) {
      this.logger.warn({ status: result.status }, 'the build row changed meanwhile; left as it is');
      return { status: result.status ?? 'unknown', applied: false };
    }
    const { status, errorCode } = result.build;
    this.logger.info({ status, ...(errorCode ? { errorCode } : {}) }, 'build finished');
    const { bytes, first, settled } = this.exported;
    if (first > 0 && settled > first) {
      await observeExport(
        this.deps.redis,
        { projectId: this.build.projectId, outcome: status, bytes, seconds: (settled - first) / 1000 },
        this.deps.metricsMaxProjects ?? 0,
      );
    }
    return { status, applied: true };
  }

  private async succeed(produced: Produced, spec: BuildSpec, lease: Lease): Promise<RunBuildResult> {
    // The result cache matches on this: the platform asked for, else the builder's own.
    const platform =
      spec.platform ??
      (await this.deps.pool.platformOf(lease.address).catch((err: unknown) => {
        this.logger.warn({ err: messageOf(err) }, 'could not learn the builder platform');
        return undefined;
      }));
    const final = await this.finalize((log) =>
      this.deps.lifecycle.succeed(
        this.id,
        {
          ...log,
          ...(produced.kind === 'artifact'
            ? {
                artifactKey: produced.stored.key,
                artifactSize: BigInt(produced.stored.size),
                artifactDigest: `sha256:${produced.stored.sha256}`,
              }
            : { imageDigest: produced.digest }),
          platform: platform ?? null,
        },
        this.attemptEnd('succeeded'),
        this.attemptGuard(),
      ),
    );
    if (!final.applied) {
      // Canceled meanwhile, or started again by another worker: its own key, so nobody else's.
      if (produced.kind === 'artifact') await this.deleteArtifact(produced.stored.key);
      return { status: 'skipped', builder: lease.address };
    }
    await this.deps.pool.setAffinity(this.build.projectId, lease.address).catch((err: unknown) => {
      this.logger.warn({ err: messageOf(err) }, 'could not record the builder affinity');
    });
    return { status: 'succeeded', builder: lease.address };
  }

  private async canceled(): Promise<RunBuildResult> {
    this.note('\nCANCELED: the build was canceled\n');
    await this.finalize((change) =>
      this.deps.lifecycle.cancel(this.id, 'the build was canceled', {
        attempt: this.attemptEnd('canceled'),
        change,
      }),
    );
    return { status: 'canceled', ...(this.lease ? { builder: this.lease.address } : {}) };
  }

  /** A user-side failure: final, never retried. */
  private async fail(errorCode: BuildErrorCode, errorMessage: string): Promise<never> {
    this.note(`\nERROR: ${errorMessage}\n`);
    await this.finalize((change) =>
      this.deps.lifecycle.fail(this.id, this.failure(errorCode, errorMessage), change),
    );
    throw new UnrecoverableError(`${errorCode}: ${errorMessage}`);
  }

  /** An infrastructure failure: retried by BullMQ while attempts remain, else final. */
  private async infrastructure(
    err: unknown,
    errorCode: 'infrastructure' | 'no_builder_available',
  ): Promise<never> {
    const message = messageOf(err);
    const last = this.attempt.attemptsMade + 1 >= this.attempt.attempts;
    this.logger.warn({ err: message, errorCode, last, builder: this.lease?.address }, 'build attempt failed');
    if (last) {
      const n = this.attempt.attempts;
      this.note(`\nERROR: ${message}\n`);
      await this.finalize((change) =>
        this.deps.lifecycle.fail(
          this.id,
          this.failure(errorCode, `${message} (gave up after ${n} attempt${n === 1 ? '' : 's'})`),
          change,
        ),
      );
      // Final either way: the row is failed, or a newer attempt owns it (see attemptGuard).
      throw new UnrecoverableError(`${errorCode}: ${message}`);
    } else {
      this.note(`\n#0 kiln: attempt failed: ${message}; the build will be retried\n`);
      await this.requeue('failed', errorCode, message);
    }
    throw new AttemptFailedError(message);
  }

  /** This worker is stopping: the build goes back to the queue for another worker. */
  private async handBack(message: string): Promise<never> {
    this.note(`\n#0 kiln: ${message}; the build will be retried\n`);
    await this.requeue('lost', 'worker_stopped', message);
    throw new HandBackError(message, this.handBackDelay());
  }

  /** Back to `queued` for another attempt (a run that never started one leaves the row queued as it is). */
  private async requeue(outcome: AttemptOutcome, code: BuildErrorCode, message: string): Promise<void> {
    // The next attempt continues this log (see BuildLog.continueFrom).
    if (!(await this.superseded())) await this.storeLog();
    const current = this.current;
    if (!current) return;
    await this.db('back to queued', () =>
      this.deps.lifecycle.requeue(this.id, {
        attemptId: current.id,
        number: current.number,
        outcome,
        code,
        message,
      }),
    );
  }
}

/** The daemon answered the solve but never sent the export: its fault, not the build's. */
class ExportMissingError extends Error {
  override name = 'ExportMissingError';
}

/** A solve failure in BuildKit's words, with how to get past it where that is a builder's limit. */
function explainSolveFailure(message: string): string {
  // A dockerd run with --bridge=none (the private one of `npm start` and the tests) has no
  // default network for RUN steps; docker users know the way out by its flag.
  if (message.includes('network bridge not found'))
    return `${message} (this builder has no bridge network: build with network=none, docker's --network none)`;
  return message;
}
