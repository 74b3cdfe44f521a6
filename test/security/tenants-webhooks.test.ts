// A hostile tenant (or anyone on the network) against the inbound webhook receivers of a real
// API on real PostgreSQL and Redis: globs and refs built to make a regular expression backtrack,
// more triggers than a repository may have, bodies of 5 MiB, floods and replays of old pushes.
// No worker runs: a push that builds only queues.
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { startTestKiln, type TestKiln } from '../support/kiln.js';

const MiB = 1024 * 1024;
const PER_PROJECT = 40;
const PER_REPOSITORY = 20;
const PER_PROJECT_REPOSITORY = 5;
const PER_ADDRESS_PER_MINUTE = 200;
const PER_REPOSITORY_PER_MINUTE = 10;
const BACKTRACKING_GLOB = '**a**a**a**a**a**a**c';

describe('webhook receivers against a hostile tenant', () => {
  let kiln: TestKiln;

  const api = (path: string, init: RequestInit = {}, token = kiln.token) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${token}`);
    if (init.body) headers.set('content-type', 'application/json');
    return fetch(`${kiln.url}${path}`, { ...init, headers });
  };
  const createTrigger = (body: Record<string, unknown>, token?: string) =>
    api(
      '/v1/triggers',
      { method: 'POST', body: JSON.stringify({ provider: 'github', branch: 'main', ...body }) },
      token,
    );
  /** Creates a trigger and returns its secret; after the project-cap test, with another project's token. */
  const trigger = async (repository: string, branch = 'main', token?: string): Promise<string> => {
    const res = await createTrigger({ repository, branch }, token);
    assert.equal(res.status, 201, await res.clone().text());
    return ((await res.json()) as { secret: string }).secret;
  };
  const push = (repository: string, ref = 'refs/heads/main', extra: Record<string, unknown> = {}) => ({
    ref,
    after: 'a'.repeat(40),
    repository: {
      full_name: repository,
      clone_url: `https://github.invalid/${repository}.git`,
      pushed_at: Math.floor(Date.now() / 1000),
    },
    ...extra,
  });
  const sign = (secret: string, body: string) =>
    `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
  const deliver = (payload: unknown, secret: string, delivery = randomUUID()) => {
    const body = JSON.stringify(payload);
    return fetch(`${kiln.url}/v1/hooks/github`, {
      method: 'POST',
      body,
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': delivery,
        'x-hub-signature-256': sign(secret, body),
      },
    });
  };
  const json = async (res: Response) => (await res.json()) as Record<string, unknown>;
  const code = async (res: Response) => ((await json(res)).error as { code: string }).code;
  const timed = async <T>(work: () => Promise<T>): Promise<[T, number]> => {
    const started = performance.now();
    const value = await work();
    return [value, performance.now() - started];
  };
  /** Runs `count` tasks, `width` at a time. */
  const pooled = async <T>(count: number, width: number, task: (i: number) => Promise<T>) => {
    const results: T[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (next < count) {
          const i = next++;
          results[i] = await task(i);
        }
      }),
    );
    return results;
  };

  before(async () => {
    kiln = await startTestKiln({
      project: 'tenant-a',
      env: {
        KILN_TRIGGERS_PER_PROJECT: String(PER_PROJECT),
        KILN_TRIGGERS_PER_REPOSITORY: String(PER_REPOSITORY),
        KILN_TRIGGERS_PER_PROJECT_REPOSITORY: String(PER_PROJECT_REPOSITORY),
        KILN_WEBHOOK_RATE_LIMIT_PER_MINUTE: String(PER_ADDRESS_PER_MINUTE),
        KILN_WEBHOOK_REPOSITORY_RATE_LIMIT_PER_MINUTE: String(PER_REPOSITORY_PER_MINUTE),
        // The payloads' clone URLs: this suite's GitHub.
        KILN_WEBHOOK_CLONE_HOSTS: 'github.invalid',
      },
    });
  });
  after(async () => {
    await kiln?.stop();
  });

  test('a ref at the length cap against a backtracking glob answers at once; /healthz stays responsive', async () => {
    const secret = await trigger('victim/glob', BACKTRACKING_GLOB);
    // 60 characters took a regular expression 4.9 s.
    const [short, shortMs] = await timed(() =>
      deliver(push('victim/glob', `refs/heads/${'a'.repeat(60)}`), secret),
    );
    assert.equal(short.status, 200);
    assert.match(String((await json(short)).reason), /matches no trigger/);
    assert.ok(shortMs < 1000, `${shortMs} ms`);

    const atCap = `refs/heads/${'a'.repeat(255 - 'refs/heads/'.length)}`;
    assert.equal(Buffer.byteLength(atCap), 255);
    const started = performance.now();
    const hooks = Array.from({ length: 4 }, () => deliver(push('victim/glob', atCap), secret));
    const [health, healthMs] = await timed(() => fetch(`${kiln.url}/healthz`));
    assert.equal(health.status, 200);
    assert.ok(healthMs < 1000, `/healthz took ${healthMs} ms while the deliveries were matched`);
    for (const res of await Promise.all(hooks)) {
      assert.equal(res.status, 200);
      assert.match(String((await json(res)).reason), /matches no trigger/);
    }
    assert.ok(performance.now() - started < 2000);
    // The glob does match when the branch ends as it asks.
    const matching = await deliver(push('victim/glob', `${atCap.slice(0, -1)}c`), secret);
    assert.equal(matching.status, 202, await matching.clone().text());
  });

  test('a ref over the cap is ignored before any matching, even one the glob would match', async () => {
    const secret = await trigger('victim/long-ref', '**');
    const before = await kiln.deps.db.build.count();
    for (const length of [256, 300, 10_000]) {
      const ref = `refs/heads/${'a'.repeat(length - 'refs/heads/'.length)}`;
      const res = await deliver(push('victim/long-ref', ref), secret);
      assert.equal(res.status, 200);
      const answer = await json(res);
      assert.equal(answer.ignored, true);
      assert.match(String(answer.reason), /longer than 255 bytes/);
    }
    assert.equal(await kiln.deps.db.build.count(), before);
  });

  test('1,000 triggers cannot be created for one repository, nor one project take all its places, nor pass the project cap', async () => {
    const answers = await pooled(1000, 10, (i) =>
      createTrigger({ repository: 'victim/crowd', branch: `b${i}` }),
    );
    const statuses = answers.map((r) => r.status);
    // One project takes only its share of the repository's places.
    assert.equal(statuses.filter((s) => s === 201).length, PER_PROJECT_REPOSITORY);
    assert.equal(statuses.filter((s) => s === 409).length, 1000 - PER_PROJECT_REPOSITORY);
    const refused = answers.find((r) => r.status === 409) as Response;
    const error = (await json(refused)).error as { code: string; message: string };
    assert.equal(error.code, 'conflict');
    assert.match(
      error.message,
      new RegExp(`at most ${PER_PROJECT_REPOSITORY} of the ${PER_REPOSITORY} triggers`),
    );
    await Promise.all(answers.map((r) => (r.bodyUsed ? undefined : r.body?.cancel())));
    assert.equal(
      await kiln.deps.db.trigger.count({ where: { repository: 'victim/crowd' } }),
      PER_PROJECT_REPOSITORY,
    );

    // Other projects still get places, until the repository holds its cap: that is how many rows one
    // delivery is checked against.
    const others = PER_REPOSITORY / PER_PROJECT_REPOSITORY - 1;
    for (let p = 0; p < others; p++) {
      const token = await kiln.newToken(`crowd-${p}`);
      for (let i = 0; i < PER_PROJECT_REPOSITORY; i++) {
        assert.equal(
          (await createTrigger({ repository: 'victim/crowd', branch: `p${p}-${i}` }, token)).status,
          201,
        );
      }
    }
    const other = await kiln.newToken('tenant-b');
    const theirs = await createTrigger({ repository: 'victim/crowd' }, other);
    assert.equal(theirs.status, 409);
    assert.match(
      ((await json(theirs)).error as { message: string }).message,
      /the most triggers one repository/,
    );
    assert.equal((await createTrigger({ repository: 'tenant-b/app' }, other)).status, 201);

    const mine = await kiln.deps.db.trigger.count({ where: { project: { name: 'tenant-a' } } });
    const more = await pooled(PER_PROJECT - mine + 5, 5, (i) =>
      createTrigger({ repository: `victim/p${i}` }),
    );
    assert.equal(more.filter((r) => r.status === 201).length, PER_PROJECT - mine);
    const over = more.filter((r) => r.status === 409);
    assert.equal(over.length, 5);
    assert.match(((await json(over[0] as Response)).error as { message: string }).message, /project/);
    assert.equal(await kiln.deps.db.trigger.count({ where: { project: { name: 'tenant-a' } } }), PER_PROJECT);
  });

  test('a delivery is checked against at most the per-repository cap of triggers, however many rows exist', async () => {
    // Rows left from a higher cap (or written behind the API's back): 1,000 for one repository.
    await kiln.newToken('tenant-c');
    const project = await kiln.deps.db.project.findUniqueOrThrow({ where: { name: 'tenant-c' } });
    const row = (secret: string) => ({
      projectId: project.id,
      provider: 'github',
      repository: 'victim/legacy',
      branch: 'main',
      spec: {},
      secret,
    });
    await kiln.deps.db.trigger.create({ data: row('oldest-secret-0123456789') });
    await kiln.deps.db.trigger.createMany({
      data: Array.from({ length: 998 }, (_, i) => row(`secret-${i}-${randomUUID()}`)),
    });
    await new Promise((r) => setTimeout(r, 10));
    await kiln.deps.db.trigger.create({ data: row('newest-secret-0123456789') });

    // The newest row is past the first PER_REPOSITORY: it is never read, so its secret verifies nothing.
    const newest = await deliver(push('victim/legacy', 'refs/heads/other'), 'newest-secret-0123456789');
    assert.equal(newest.status, 401);
    assert.equal(await code(newest), 'invalid_signature');

    // A body of 4 MiB is hashed once per distinct secret read (at most 20), not 1,000 times.
    const padded = push('victim/legacy', 'refs/heads/other', { pad: 'x'.repeat(4 * MiB) });
    const [oldest, ms] = await timed(() => deliver(padded, 'oldest-secret-0123456789'));
    assert.equal(oldest.status, 200, await oldest.clone().text());
    assert.ok(ms < 3000, `${ms} ms`);
  });

  test('5 MiB bodies: unsigned or with a wrong signature, refused 401 quickly', async () => {
    const body = JSON.stringify({ ...push('victim/legacy'), pad: 'x'.repeat(5 * MiB - 1000) });
    const headers = {
      'content-type': 'application/json',
      'x-github-event': 'push',
      'x-github-delivery': randomUUID(),
    };
    const [unsigned, unsignedMs] = await timed(() =>
      fetch(`${kiln.url}/v1/hooks/github`, { method: 'POST', body, headers }),
    );
    assert.equal(unsigned.status, 401);
    assert.equal(await code(unsigned), 'invalid_signature');
    assert.ok(unsignedMs < 2000, `${unsignedMs} ms`);
    const [forged, forgedMs] = await timed(() =>
      fetch(`${kiln.url}/v1/hooks/github`, {
        method: 'POST',
        body,
        headers: { ...headers, 'x-hub-signature-256': sign('a-guess-at-the-secret', body) },
      }),
    );
    assert.equal(forged.status, 401);
    assert.equal(await code(forged), 'invalid_signature');
    assert.ok(forgedMs < 3000, `${forgedMs} ms`);
  });

  test('a replayed push older than KILN_WEBHOOK_MAX_AGE_SECONDS is ignored, whatever its delivery id', async () => {
    assert.equal(kiln.config.webhooks.maxAgeSeconds, 600);
    const secret = await trigger('victim/replay', 'main', await kiln.newToken('tenant-d'));
    const old = push('victim/replay');
    old.repository.pushed_at = Math.floor(Date.now() / 1000) - 3600;
    const before = await kiln.deps.db.build.count();
    const res = await deliver(old, secret);
    assert.equal(res.status, 200);
    const answer = await json(res);
    assert.equal(answer.ignored, true);
    assert.match(String(answer.reason), /the push is 36\d\d s old \(more than 600 s\)/);
    assert.equal(await kiln.deps.db.build.count(), before);

    const fresh = await deliver(push('victim/replay'), secret);
    assert.equal(fresh.status, 202, await fresh.clone().text());
    assert.equal(await kiln.deps.db.build.count(), before + 1);
  });

  test("a delivery id one project's sender used does not make another project's delivery a replay", async () => {
    const attacker = await trigger('victim/ids', 'main', await kiln.newToken('tenant-f'));
    const victim = await trigger('victim/ids', 'main', await kiln.newToken('tenant-g'));
    const id = randomUUID();
    assert.equal((await deliver(push('victim/ids'), attacker, id)).status, 202);
    const res = await deliver(push('victim/ids'), victim, id);
    assert.equal(res.status, 202, await res.clone().text());
    // Its own replay still is one.
    const replay = await deliver(push('victim/ids'), victim, id);
    assert.equal(replay.status, 200);
    assert.equal((await json(replay)).reason, 'duplicate delivery');
  });

  test('one project refusing a build does not stop the other triggers a delivery verifies; all refusing fails it', async () => {
    const secret = 'one-secret-for-both-0123456789';
    for (const project of ['tenant-partial-ok', 'tenant-partial-off']) {
      const res = await createTrigger({ repository: 'shared/partial', secret }, await kiln.newToken(project));
      assert.equal(res.status, 201, await res.clone().text());
    }
    const disable = (name: string) =>
      kiln.deps.db.project.update({ where: { name }, data: { disabledAt: new Date() } });
    await disable('tenant-partial-off');
    type Answer = { builds: Array<{ id: string }>; refused?: Array<{ error: { code: string } }> };
    const id = randomUUID();
    const res = await deliver(push('shared/partial'), secret, id);
    assert.equal(res.status, 202, await res.clone().text());
    const first = (await json(res)) as Answer;
    assert.equal(first.builds.length, 1);
    assert.deepEqual(
      first.refused?.map((r) => r.error.code),
      ['forbidden'],
    );
    // The receipt is forgotten: a redelivery finds the build made and tries the refused trigger again.
    const again = await deliver(push('shared/partial'), secret, id);
    assert.equal(again.status, 202, await again.clone().text());
    assert.deepEqual(
      ((await json(again)) as Answer).builds.map((b) => b.id),
      first.builds.map((b) => b.id),
    );
    // Every trigger refusing: the delivery fails as the refusal did, for its sender to see.
    await disable('tenant-partial-ok');
    const none = await deliver(push('shared/partial'), secret);
    assert.equal(none.status, 403);
    assert.equal(await code(none), 'forbidden');
  });

  test('rate limits: per repository once verified (forgeries do not count), per address before the body', async () => {
    const token = await kiln.newToken('tenant-d');
    const secret = await trigger('victim/busy', 'main', token);
    for (let i = 0; i < PER_REPOSITORY_PER_MINUTE; i++) {
      assert.equal((await deliver(push('victim/busy'), 'forged-secret-0123456789')).status, 401);
    }
    for (let i = 0; i < PER_REPOSITORY_PER_MINUTE; i++) {
      const res = await deliver(push('victim/busy', 'refs/heads/other'), secret);
      assert.equal(res.status, 200, await res.clone().text());
    }
    const limited = await deliver(push('victim/busy', 'refs/heads/other'), secret);
    assert.equal(limited.status, 429);
    assert.equal(await code(limited), 'rate_limited');
    // Another project's trigger on the same repository is not affected: its own allowance.
    const neighbour = await trigger('victim/busy', 'main', await kiln.newToken('tenant-e'));
    const unaffected = await deliver(push('victim/busy', 'refs/heads/other'), neighbour);
    assert.equal(unaffected.status, 200, await unaffected.clone().text());
    // Another repository is not affected.
    const elsewhere = await trigger('victim/quiet', 'main', token);
    assert.equal((await deliver(push('victim/quiet', 'refs/heads/other'), elsewhere)).status, 200);

    // Per address: counted from zero here; refused before headers or body are looked at.
    const keys = await kiln.redis.keys('kiln:ratelimit:hooks:address:*');
    if (keys.length > 0) await kiln.redis.del(...keys);
    const flood = await pooled(PER_ADDRESS_PER_MINUTE + 20, 20, () =>
      fetch(`${kiln.url}/v1/hooks/github`, { method: 'POST', body: '{}' }),
    );
    const statuses = flood.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 400).length, PER_ADDRESS_PER_MINUTE);
    assert.equal(statuses.filter((s) => s === 429).length, 20);
    const refused = flood.find((r) => r.status === 429) as Response;
    assert.ok(refused.headers.get('retry-after'));
    assert.equal(await code(refused), 'rate_limited');
    await Promise.all(flood.map((r) => (r.bodyUsed ? undefined : r.body?.cancel())));
    // The bearer-token API and health are not the receivers' allowance.
    assert.equal((await api('/v1/triggers')).status, 200);
    assert.equal((await fetch(`${kiln.url}/healthz`)).status, 200);
  });
});
