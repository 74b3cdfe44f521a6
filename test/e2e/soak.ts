// Soak: 300 builds from 8 concurrent clients while faults are injected at random (a worker killed
// with SIGKILL and replaced, the second builder killed and restarted, Redis restarted without
// persistence). Every accepted build must end in one final state: 0 lost, 0 completed twice.
// Everything real: the API in this process, 2 worker processes, the two dockerds of `npm test`
// (the second one is the one killed), a private Redis, S3 storage (s3rver). Prints its figures as
// one `[soak] figures {json}` line (scripts/reliability.sh reads it). Not a *.test.ts: `npm test`
// leaves it out (4 minutes, faults at random); run it with `npm test -- test/e2e/soak.ts`.
//   KILN_SOAK_BUILDS (default 300) and KILN_SOAK_CLIENTS (default 8) size it.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { describe, test } from 'node:test';
import { logStreamKey } from '@kiln/core';
import { Redis } from 'ioredis';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startS3rver } from '../../packages/core/test-support/s3rver.js';
import {
  addCleanup,
  type BuildJson,
  checkArtifact,
  FINAL,
  type KilnProcess,
  listFiles,
  logger,
  pgQuery,
  RUN,
  secs,
  serviceEnv,
  sharedDockerd2,
  sleep,
  spawnWorker,
  startApi,
  startRedis,
  summarizeLog,
  testBuilders,
  tgz,
} from '../support/processes.js';

const BUILDS = Number(process.env.KILN_SOAK_BUILDS ?? 300);
const CLIENTS = Number(process.env.KILN_SOAK_CLIENTS ?? 8);
const log = logger('soak');
/** A second in the RUN step keeps builds in flight long enough for faults to hit them mid-build. */
const DOCKERFILE = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'ARG N=0',
  RUN('/bin/busybox sleep 1; /bin/busybox mkdir -p /out && echo built-$N > /out/result.txt'),
  'FROM scratch',
  'COPY --from=b /out /out',
  '',
].join('\n');

type Fault = 'worker_kill9' | 'builder_restart' | 'redis_restart';

describe('soak under random faults', () => {
  test(`${BUILDS} builds from ${CLIENTS} clients with workers, a builder and Redis failing: 0 lost, 0 twice`, {
    timeout: 9 * 60_000,
  }, async () => {
    const t0 = Date.now();
    const { D1 } = testBuilders();
    const d2 = sharedDockerd2();
    const redis = await startRedis();
    const s3 = await startS3rver();
    addCleanup(() => s3.stop());
    const { env } = await serviceEnv(redis.url, {
      KILN_BUILDERS: `${D1}=2,${d2.address}=2`,
      KILN_S3_BUCKET: s3.bucket,
      KILN_S3_ENDPOINT: s3.endpoint,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      KILN_RECONCILE_INTERVAL_SECONDS: '3',
      KILN_RATE_LIMIT_PER_MINUTE: '0',
    });
    const api = await startApi(env, 'soak');
    // Every process that ran, for the figures and for the output on failure.
    const workers: KilnProcess[] = [];
    let nextWorker = 1;
    const live: KilnProcess[] = [];
    const startWorker = () => {
      const w = spawnWorker(`w${nextWorker++}`, env);
      workers.push(w);
      live.push(w);
      return w;
    };
    startWorker();
    startWorker();
    const ctxs = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) =>
        makeContext({
          busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
          Dockerfile: DOCKERFILE,
          // Each client its own context (its own digest), so the result cache never answers.
          [`client-${c}.txt`]: `client ${c}\n`,
        }),
      ),
    );
    const probe = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    probe.on('error', () => {});
    try {
      const contexts = await Promise.all(ctxs.map((c) => tgz(c.dir)));

      // Clients: each submits one build, waits for its end, submits the next, until BUILDS are in.
      const accepted: BuildJson[] = [];
      const numberOf = new Map<string, number>();
      const submitErrors: string[] = [];
      let submitted = 0;
      const client = async (c: number) => {
        while (submitted < BUILDS) {
          const n = submitted++;
          let build: BuildJson | undefined;
          for (let tries = 0; !build; tries++) {
            const res = await api
              .api(`/v1/builds?output=type=tar,dest=r.tar&network=none&noCache=true&build-arg=N=${n}`, {
                method: 'POST',
                body: contexts[c],
                headers: { 'content-type': 'application/gzip' },
              })
              .catch((err: Error) => err);
            if (!(res instanceof Error) && res.status === 202) {
              build = (await res.json()) as BuildJson;
              break;
            }
            // A refused request is not a lost build (nothing was accepted): note it and try again.
            submitErrors.push(res instanceof Error ? res.message : `${res.status} ${await res.text()}`);
            assert.ok(tries < 20, `build ${n} not accepted after 20 tries: ${submitErrors.at(-1)}`);
            await sleep(500);
          }
          accepted.push(build);
          numberOf.set(build.id, n);
          await api.waitFor(build.id, FINAL, 240_000);
        }
      };

      // Faults at random, one every 8-16 s, while the clients run.
      const faults: Array<{ kind: Fault; at: number; took: number }> = [];
      let clientsDone = false;
      const inject = async () => {
        const kinds: Fault[] = ['worker_kill9', 'builder_restart', 'redis_restart'];
        let turn = Math.floor(Math.random() * kinds.length);
        while (!clientsDone) {
          const wait = 8_000 + Math.random() * 8_000;
          for (const end = Date.now() + wait; Date.now() < end && !clientsDone; ) await sleep(250);
          if (clientsDone) break;
          // Round-robin from a random start, so every kind happens even in a short run.
          const kind = kinds[turn++ % kinds.length] as Fault;
          const t = Date.now();
          if (kind === 'worker_kill9') {
            const victim = live.splice(Math.floor(Math.random() * live.length), 1)[0];
            await victim?.kill();
            startWorker();
          } else if (kind === 'builder_restart') {
            await d2.stop();
            await sleep(8_000);
            await d2.start();
          } else {
            await redis.stop();
            await redis.start();
          }
          faults.push({ kind, at: t - t0, took: Date.now() - t });
          log(`fault ${faults.length}: ${kind} at ${secs(t - t0)} (took ${secs(Date.now() - t)})`);
        }
      };
      const injector = inject();
      await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
      clientsDone = true;
      await injector;
      const tClients = Date.now();

      // The figures, from the database (the source of truth) and the live log streams.
      const ids = accepted.map((b) => b.id);
      const rows = await pgQuery<{
        id: string;
        status: string;
        attempts: number;
        errorCode: string | null;
        artifactKey: string | null;
      }>(
        env.DATABASE_URL as string,
        'SELECT id, status, attempts, "errorCode", "artifactKey" FROM "Build" WHERE id = ANY($1)',
        [ids],
      );
      const successes = await pgQuery<{ buildId: string; n: string }>(
        env.DATABASE_URL as string,
        `SELECT "buildId", count(*) AS n FROM "BuildAttempt" WHERE "buildId" = ANY($1) AND outcome = 'succeeded' GROUP BY "buildId"`,
        [ids],
      );
      const successCount = new Map(successes.map((r) => [r.buildId, Number(r.n)]));
      const ends = new Map<string, number>();
      const pipeline = probe.pipeline();
      for (const id of ids) pipeline.xrange(logStreamKey(id), '-', '+');
      const streams = (await pipeline.exec()) ?? [];
      for (const [i, [, entries]] of streams.entries()) {
        const n = (entries as Array<[string, string[]]>).filter(([, f]) => f[1] === 'end').length;
        ends.set(ids[i] as string, n);
      }

      const byStatus = new Map<string, number>();
      const failedBy = new Map<string, number>();
      const attemptsHist = new Map<number, number>();
      for (const r of rows) {
        byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1);
        if (r.status === 'failed')
          failedBy.set(r.errorCode ?? '?', (failedBy.get(r.errorCode ?? '?') ?? 0) + 1);
        attemptsHist.set(r.attempts, (attemptsHist.get(r.attempts) ?? 0) + 1);
      }
      const lost = ids.length - rows.filter((r) => FINAL.includes(r.status)).length;
      const twice = rows.filter(
        (r) =>
          (successCount.get(r.id) ?? 0) > 1 ||
          (r.status === 'succeeded' && (successCount.get(r.id) ?? 0) !== 1),
      );
      // Streams of builds Redis lost in a restart are gone with it: count only the ones that exist.
      const multipleEnds = [...ends].filter(([, n]) => n > 1);
      const faultCounts = new Map<Fault, number>();
      for (const f of faults) faultCounts.set(f.kind, (faultCounts.get(f.kind) ?? 0) + 1);
      const figures = {
        builds: BUILDS,
        clients: CLIENTS,
        accepted: accepted.length,
        submitRetries: submitErrors.length,
        succeeded: byStatus.get('succeeded') ?? 0,
        failed: Object.fromEntries(failedBy),
        lost,
        completedTwice: twice.length + multipleEnds.length,
        attempts: Object.fromEntries([...attemptsHist].sort((a, b) => a[0] - b[0])),
        faults: Object.fromEntries(faultCounts),
        faultLog: faults.map((f) => `${f.kind}@${Math.round(f.at / 1000)}s`),
        workerProcesses: workers.length,
        durationSeconds: Math.round((tClients - t0) / 1000),
      };
      log(`figures ${JSON.stringify(figures)}`);

      assert.equal(accepted.length, BUILDS);
      assert.equal(new Set(ids).size, BUILDS, 'every accepted build is a new build');
      assert.equal(rows.length, BUILDS, 'every accepted build has its row');
      assert.equal(lost, 0, 'no build left queued or running');
      assert.deepEqual(twice, [], 'no build succeeded twice');
      assert.deepEqual(multipleEnds, [], 'no build reached a final state twice');
      assert.ok(faults.length >= 3, `faults injected: ${faults.length}`);
      // Faults cost retries, not builds: nearly all succeed (a build can fail for good only by
      // using up its attempts on faults, e.g. two worker kills in a row).
      assert.ok(figures.succeeded >= BUILDS * 0.95, `succeeded: ${figures.succeeded} of ${BUILDS}`);
      for (const code of failedBy.keys()) {
        assert.ok(
          ['infrastructure', 'no_builder_available'].includes(code),
          `a healthy build failed with ${code}`,
        );
      }
      // A sample of artifacts: complete, hashed, with the right content.
      const sample = rows.filter((r) => r.status === 'succeeded').slice(0, 10);
      for (const r of sample) {
        await checkArtifact(await api.get(r.id), 'out/result.txt', `built-${numberOf.get(r.id)}\n`);
      }
      assert.deepEqual(await listFiles(s3.uploadsDir), [], 'no multipart upload left open');
      for (const w of live) assert.equal(await w.stop(), 0, `${w.name} exits 0`);
      log(`worker warnings: ${summarizeLog(workers.map((w) => w.output()).join('\n'))}`);
      log(`${BUILDS} builds in ${secs(tClients - t0)}`);
    } catch (err) {
      for (const w of workers) {
        console.error(`---- output of ${w.name} (pid ${w.pid}), last 3000 chars ----`);
        console.error(w.output().slice(-3000));
      }
      throw err;
    } finally {
      probe.disconnect();
      await Promise.all(workers.map((w) => w.stop(10_000)));
      await Promise.all(ctxs.map((c) => c.cleanup()));
      await api.close();
      await d2.cleanup();
      await redis.cleanup();
      await s3.stop();
    }
  });
});
