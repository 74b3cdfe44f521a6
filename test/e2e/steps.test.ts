// A build's step list (GET /v1/builds/:id/steps, the build page's timeline) is bounded: the worker
// keeps the first steps and counts the rest. Here the cap is lowered to 2 so that a real build on
// `npm test`'s dockerd goes past it; solve-steps.unit.test.ts shows the default cap and clipping.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import { apiClient, busyboxContext, FINAL, RESULT_DOCKERFILE, tgz } from '../support/processes.js';

let kiln: TestKiln;
before(async () => {
  kiln = await startTestKiln({ worker: true, project: 'steps', workerDeps: { maxListedSteps: 2 } });
});
after(() => kiln?.stop());

test('past the cap the step list holds the first steps and counts the others, as the log numbers them', async () => {
  const client = apiClient(kiln.url, kiln.token);
  const ctx = await busyboxContext(RESULT_DOCKERFILE, { nonce: `${process.pid}-${Date.now()}\n` });
  let id: string;
  try {
    ({ id } = await client.submit(await tgz(ctx.dir), 'output=type=tar,dest=out.tar&network=none'));
  } finally {
    await ctx.cleanup();
  }
  const done = await client.waitFor(id, FINAL, 120_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error));

  const res = await client.api(`/v1/builds/${id}/steps`);
  assert.equal(res.status, 200);
  const { items, omitted } = (await res.json()) as { items: Array<{ name: string }>; omitted: number };
  assert.equal(items.length, 2, JSON.stringify(items));
  // The plain progress log numbers every step it saw end (#N DONE / CACHED / ERROR).
  const ended = new Set(
    [...(await client.logs(id)).matchAll(/^#(\d+) (?:DONE|CACHED|ERROR)/gm)].map((m) => m[1]),
  );
  assert.ok(ended.size >= 4, `${ended.size} steps in the log`);
  assert.equal(items.length + omitted, ended.size);
});
