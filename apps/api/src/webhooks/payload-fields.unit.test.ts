// PayloadFields on real worker threads.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { isAppError } from '@kiln/core';
import { PayloadFields, type PayloadLimits } from './payload-fields.js';
import { github, gitlab } from './providers.js';

const fields = new PayloadFields({ maxDepth: 4, maxContainers: 6, timeoutMs: 10_000, maxHeapMb: 64 });
after(() => fields.close());

const PATHS = [['repository', 'full_name'], ['repository', 'pushed_at'], ['ref'], ['deleted']] as const;
const read = (text: string, form = false) => fields.read(Buffer.from(text), form, PATHS);
const refused = (pattern: RegExp) => (err: unknown) =>
  isAppError(err) && err.code === 'invalid_request' && pattern.test(err.message);

/** A reader with room for large payloads; `over` changes its limits. */
const roomyReader = (over: Partial<PayloadLimits> = {}) =>
  new PayloadFields({ maxDepth: 32, maxContainers: 1_000_000, timeoutMs: 60_000, maxHeapMb: 64, ...over });
/** Hundreds of thousands of distinct keys: hundreds of milliseconds of JSON.parse. */
const manyKeys = () =>
  Buffer.from(`{${Array.from({ length: 300_000 }, (_, i) => `"key${i}": ${i}`).join(', ')}}`);
/** A small read the reader answers, as after a thread was replaced. */
const readsAgain = async (reader: PayloadFields) =>
  assert.deepEqual(await reader.read(Buffer.from('{"ref": "r"}'), false, [['ref']]), { ref: 'r' });

test('only the fields asked for come back, those that are strings, numbers, booleans or null', async () => {
  const payload = {
    repository: { full_name: 'Acme/App', pushed_at: 1700000000, owner: { name: 'x' } },
    ref: 'refs/heads/main',
    deleted: null,
    commits: [{ id: 'a' }],
  };
  assert.deepEqual(await read(JSON.stringify(payload)), {
    repository: { full_name: 'Acme/App', pushed_at: 1700000000 },
    ref: 'refs/heads/main',
    deleted: null,
  });
  // Missing, or an object or array where a value was asked for: left out.
  assert.deepEqual(await read('{"repository": "flat", "ref": ["x"], "deleted": {"a": 1}}'), {});
  assert.deepEqual(await read('{"repository": {"full_name": {"deep": "x"}}}'), { repository: {} });
  // A form's payload field.
  assert.deepEqual(await read(`payload=${encodeURIComponent('{"ref": "refs/heads/x"}')}`, true), {
    ref: 'refs/heads/x',
  });
});

test('what is not a JSON object is refused', async () => {
  await assert.rejects(read('{"ref": '), refused(/not valid JSON/));
  await assert.rejects(read('[1, 2]'), refused(/must be a JSON object/));
  await assert.rejects(read('a=1', true), refused(/no "payload" field/));
});

test('nesting and containers past the limits are refused before parsing; brackets inside strings do not count', async () => {
  await read('{"a": [{"b": [1]}]}');
  await read('{"a": "[[[[[[[[{{{{{{", "b": "\\"[[[[[[\\\\"}');
  await assert.rejects(read('{"a": [[[[1]]]]}'), refused(/nests deeper than 4 levels/));
  // An escaped quote does not end a string; an escaped backslash before a quote does.
  await read('{"a": "\\"[[[[[[["}');
  await assert.rejects(read('{"a": "\\\\", "b": [[[[]]]]}'), refused(/deeper than 4/));
  await read('{"a": [[], [], [], []]}');
  await assert.rejects(read('{"a": [[], [], [], [], [], []]}'), refused(/more than 6 objects and arrays/));
});

test('a read over its budget is refused and its thread replaced; the event loop turns meanwhile', async () => {
  const slow = roomyReader({ timeoutMs: 50 });
  try {
    let turns = 0;
    let turning = true;
    const turn = () => {
      turns++;
      if (turning) setImmediate(turn);
    };
    setImmediate(turn);
    await assert.rejects(slow.read(manyKeys(), false, [['ref']]), refused(/within 50 ms/));
    turning = false;
    assert.ok(turns > 5, `the event loop turned ${turns} times during the read`);
    await readsAgain(slow);
  } finally {
    await slow.close();
  }
});

test('a payload needing more heap than a thread may have is refused, and the next read gets a new thread', async () => {
  const small = roomyReader({ maxHeapMb: 8 });
  try {
    const objects = Array.from({ length: 400_000 }, (_, i) => `{"k${i}": ${i}}`).join(', ');
    await assert.rejects(
      small.read(Buffer.from(`{"a": [${objects}]}`), false, [['ref']]),
      refused(/could not be read/),
    );
    await readsAgain(small);
  } finally {
    await small.close();
  }
});

test('close() during a read, or before one, answers unavailable: never a hang', async () => {
  const closing = roomyReader();
  const unavailable = (err: unknown) => isAppError(err) && err.code === 'unavailable';
  const reading = closing.read(manyKeys(), false, [['ref']]);
  await closing.close();
  await assert.rejects(reading, unavailable);
  await assert.rejects(closing.read(Buffer.from('{}'), false, [['ref']]), unavailable);
});

test('each provider reads nothing of a payload but its listed fields', async () => {
  const full = {
    ref: 'refs/heads/main',
    before: '0'.repeat(40),
    after: 'a'.repeat(40),
    checkout_sha: 'b'.repeat(40),
    deleted: false,
    repository: {
      full_name: 'Acme/App',
      pushed_at: 1_700_000_000,
      clone_url: 'https://github.example/acme/app.git',
      git_http_url: 'https://gitlab.example/acme/app.git',
      owner: { name: 'acme' },
    },
    project: { path_with_namespace: 'Acme/App', git_http_url: 'https://gitlab.example/acme/app.git' },
    head_commit: { id: 'a'.repeat(40), message: 'x' },
    commits: [{ id: 'a'.repeat(40) }],
  };
  const roomy = roomyReader();
  try {
    for (const provider of [github, gitlab]) {
      const sparse = await roomy.read(Buffer.from(JSON.stringify(full)), false, provider.fields);
      assert.equal(provider.repositoryOf(sparse), provider.repositoryOf(full), provider.name);
      assert.deepEqual(provider.pushOf(sparse), provider.pushOf(full), provider.name);
      assert.ok(provider.repositoryOf(sparse), provider.name);
    }
  } finally {
    await roomy.close();
  }
});
