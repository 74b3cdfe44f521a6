// The worker checks a stored context again under its own settings: the API checked the upload
// under the settings it had then (a context is reused by digest long after), so a stored context
// over the worker's limits, or a Dockerfile naming a frontend the worker's list no longer allows,
// fails the build at once as the user's error: one attempt, no builder blamed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createWorker, type KilnWorker } from '@kiln/worker';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import { apiClient, busyboxContext, FINAL, tgz } from '../support/processes.js';

const FRONTEND = 'kiln.invalid/frontend:1';
let kiln: TestKiln;
let worker: KilnWorker | undefined;
before(async () => {
  kiln = await startTestKiln({ project: 'checks', env: { KILN_ALLOWED_FRONTENDS: FRONTEND } });
});
after(async () => {
  await worker?.stop();
  await kiln?.stop();
});

test('a stored context over the worker limits, or a frontend it no longer allows: failed after one attempt', async () => {
  const client = apiClient(kiln.url, kiln.token);
  const submit = async (dockerfile: string, files: Record<string, string> = {}) => {
    const ctx = await busyboxContext(dockerfile, files);
    try {
      return (await client.submit(await tgz(ctx.dir), 'output=type=tar,dest=out.tar&network=none')).id;
    } finally {
      await ctx.cleanup();
    }
  };
  // Accepted by the API as it is configured: the frontend is allowed, 40 entries are few.
  const withFrontend = await submit(`# syntax=${FRONTEND}\nFROM scratch\nCOPY Dockerfile /\n`);
  const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`f${i}`, `${i}\n`]));
  const large = await submit('FROM scratch\nCOPY f1 /\n', many);

  // The operator then lowered the entry limit and emptied the list; a worker started since has those.
  const config = kiln.config;
  worker = createWorker(
    { ...config, allowedFrontends: [], limits: { ...config.limits, maxContextEntries: 20 } },
    { healthIntervalMs: 0, reconcileIntervalMs: 0, retentionIntervalMs: 0 },
  );
  await worker.start();

  const refused = await client.waitFor(withFrontend, FINAL, 120_000);
  assert.equal(refused.status, 'failed');
  assert.equal(refused.error?.code, 'invalid_spec', JSON.stringify(refused.error));
  assert.match(refused.error?.message ?? '', /selects the frontend image "kiln\.invalid\/frontend:1"/);
  assert.equal(refused.attempts, 1);

  const tooLarge = await client.waitFor(large, FINAL, 120_000);
  assert.equal(tooLarge.status, 'failed');
  assert.equal(tooLarge.error?.code, 'context_too_large', JSON.stringify(tooLarge.error));
  assert.equal(tooLarge.attempts, 1);

  // Neither was the builder's fault: the next attempt of anything would still prefer it.
  const attempts = await kiln.deps.db.buildAttempt.findMany({
    where: { buildId: { in: [withFrontend, large] } },
    select: { errorCode: true },
    orderBy: { errorCode: 'asc' },
  });
  assert.deepEqual(
    attempts.map((a) => a.errorCode),
    ['context_too_large', 'invalid_spec'],
  );
});
