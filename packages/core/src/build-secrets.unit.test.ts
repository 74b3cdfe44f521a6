import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_SECRET_BYTES, MAX_SECRETS, parseBuildSecrets } from './build-secrets.js';
import { AppError } from './errors.js';
import { parseBuildSpec } from './spec.js';

const VALUE = 'hunter2-do-not-echo';

function rejects(value: unknown, pattern: RegExp): void {
  assert.throws(
    () => parseBuildSecrets(value),
    (err: unknown) => {
      assert.ok(err instanceof AppError && err.code === 'invalid_spec', String(err));
      assert.match(err.message, pattern);
      assert.ok(!err.message.includes(VALUE), `the message quotes a value: ${err.message}`);
      return true;
    },
  );
}

test('secrets: text or base64 values by id, as an object or a JSON string; ids sorted', () => {
  const bytes = Buffer.from([0, 1, 0xfe, 0xff]);
  const parsed = parseBuildSecrets({ npm: VALUE, 'b.key_2-x': { base64: bytes.toString('base64') } });
  assert.deepEqual(Object.keys(parsed), ['b.key_2-x', 'npm']);
  assert.deepEqual(parsed.npm, Buffer.from(VALUE));
  assert.deepEqual(parsed['b.key_2-x'], bytes);
  assert.deepEqual(parseBuildSecrets(JSON.stringify({ a: '' })), { a: Buffer.alloc(0) });
  assert.deepEqual(parseBuildSecrets(undefined), {});
  assert.deepEqual(parseBuildSecrets(''), {});
  // An id that names an Object.prototype property stays an own key.
  assert.deepEqual(Object.keys(parseBuildSecrets(JSON.parse('{"__proto__": "x"}'))), ['__proto__']);
});

test('secrets: bad ids, values, sizes and counts are invalid specs that never quote a value', () => {
  rejects(`{"a": "${VALUE}"`, /not valid JSON/);
  rejects([`a=${VALUE}`], /must be an object/);
  rejects({ 'a/b': VALUE }, /secret id "a\/b" is invalid/);
  rejects({ '..': VALUE }, /is invalid/);
  rejects({ '': VALUE }, /is invalid/);
  rejects({ ['x'.repeat(129)]: VALUE }, /is invalid/);
  rejects({ a: 1 }, /secrets\.a must be a string/);
  rejects({ a: { base64: `${VALUE}!` } }, /secrets\.a\.base64 is not valid base64/);
  rejects({ a: { base64: 'QQ==', extra: VALUE } }, /must be a string or/);
  rejects({ a: 'x'.repeat(MAX_SECRET_BYTES + 1) }, /larger than 512000 bytes/);
  rejects({ a: { base64: Buffer.alloc(MAX_SECRET_BYTES + 1).toString('base64') } }, /larger than/);
  assert.equal(Object.keys(parseBuildSecrets({ a: 'x'.repeat(MAX_SECRET_BYTES) })).length, 1);
  rejects(
    Object.fromEntries(Array.from({ length: MAX_SECRETS + 1 }, (_, i) => [`s${i}`, VALUE])),
    /more than/,
  );
});

test('the parsed spec keeps the ids only', () => {
  const spec = parseBuildSpec({ secrets: { b: VALUE, a: VALUE } });
  assert.deepEqual(spec.secrets, ['a', 'b']);
  assert.ok(!JSON.stringify(spec).includes(VALUE));
  assert.equal('secrets' in parseBuildSpec({ secrets: {} }), false);
  assert.throws(() => parseBuildSpec({ secrets: { 'a b': VALUE } }), { code: 'invalid_spec' });
});
