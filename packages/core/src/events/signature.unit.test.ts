// Kiln-Signature: what a receiver checks (pure logic; no services).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { signKilnEvent, verifyKilnSignature } from './signature.js';

const secret = 'whsec_test-secret';
const body = '{"id":"01J","type":"build.succeeded","data":{"id":"b1"}}';
const now = new Date('2025-06-01T12:00:00Z');
const t = Math.floor(now.getTime() / 1000);

test('a signed body verifies; the header is t=<seconds>,v1=<hex HMAC-SHA256 of "t.body">', () => {
  const header = signKilnEvent(secret, body, now);
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  assert.equal(header, `t=${t},v1=${expected}`);
  assert.deepEqual(verifyKilnSignature(header, body, secret, 300, now), { ok: true, timestamp: t });
  assert.deepEqual(verifyKilnSignature(header, Buffer.from(body), secret, 300, now), {
    ok: true,
    timestamp: t,
  });
});

test('a tampered body or another secret is a mismatch', () => {
  const header = signKilnEvent(secret, body, now);
  assert.deepEqual(verifyKilnSignature(header, body.replace('succeeded', 'failed'), secret, 300, now), {
    ok: false,
    reason: 'mismatch',
  });
  assert.deepEqual(verifyKilnSignature(header, `${body} `, secret, 300, now), {
    ok: false,
    reason: 'mismatch',
  });
  assert.deepEqual(verifyKilnSignature(header, body, 'whsec_other', 300, now), {
    ok: false,
    reason: 'mismatch',
  });
  // The time is signed too: moving t breaks the signature even within the tolerance.
  const moved = header.replace(`t=${t}`, `t=${t + 1}`);
  assert.deepEqual(verifyKilnSignature(moved, body, secret, 300, now), { ok: false, reason: 'mismatch' });
});

test('a timestamp outside the tolerance (either way) is stale, even with a valid signature', () => {
  const old = signKilnEvent(secret, body, new Date(now.getTime() - 301_000));
  assert.deepEqual(verifyKilnSignature(old, body, secret, 300, now), { ok: false, reason: 'stale' });
  const future = signKilnEvent(secret, body, new Date(now.getTime() + 301_000));
  assert.deepEqual(verifyKilnSignature(future, body, secret, 300, now), { ok: false, reason: 'stale' });
  const edge = signKilnEvent(secret, body, new Date(now.getTime() - 300_000));
  assert.equal(verifyKilnSignature(edge, body, secret, 300, now).ok, true);
});

test('several v1 entries (a secret rotation): any match verifies; unknown keys are ignored', () => {
  const good = signKilnEvent(secret, body, now).split(',')[1];
  const other = signKilnEvent('whsec_old', body, now).split(',')[1];
  assert.equal(verifyKilnSignature(`t=${t},${other},${good},v2=zzz`, body, secret, 300, now).ok, true);
  assert.equal(verifyKilnSignature(`t=${t},${other}`, body, secret, 300, now).ok, false);
});

test('malformed headers are refused as malformed, never thrown on', () => {
  const v1 = signKilnEvent(secret, body, now).split(',')[1] as string;
  for (const header of [
    undefined,
    null,
    '',
    'garbage',
    `v1=${'0'.repeat(64)}`, // no t
    `t=${t}`, // no v1
    `t=${t},v1=abc`, // short hex
    `t=${t},v1=${'G'.repeat(64)}`,
    `t=-5,${v1}`,
    `t=1e9,${v1}`,
    `t=${t},t=${t},${v1}`,
    `t=${t};${v1}`,
    `${'t=1,'.repeat(2000)}${v1}`,
  ]) {
    assert.deepEqual(
      verifyKilnSignature(header, body, secret, 300, now),
      { ok: false, reason: 'malformed' },
      String(header),
    );
  }
});
