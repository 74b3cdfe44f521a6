// Pure classification of error shapes; the real ones are produced by stopping PostgreSQL in
// test/e2e/faults-services.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDatabaseUnavailable } from './unavailable.js';

test('connection failures in their wrappings are "unavailable"', () => {
  const adapter = Object.assign(new Error('DatabaseNotReachable'), {
    cause: { kind: 'DatabaseNotReachable', host: '127.0.0.1', port: 5432 },
  });
  for (const err of [
    Object.assign(new Error("Can't reach database server at 127.0.0.1:5432"), { code: 'P1001' }),
    Object.assign(new Error('x'), { code: 'P2024' }),
    Object.assign(new Error('invalid invocation'), { code: 'P2010', meta: { driverAdapterError: adapter } }),
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
    Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
    Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
    new Error('Connection terminated unexpectedly'),
    new Error('wrapped', { cause: { kind: 'ConnectionClosed' } }),
  ]) {
    assert.equal(isDatabaseUnavailable(err), true, String(err));
  }
});

test('query errors and non-errors are not', () => {
  for (const err of [
    Object.assign(new Error('Unique constraint failed'), { code: 'P2002' }),
    Object.assign(new Error('relation "x" does not exist'), { code: '42P01' }),
    new Error('internal'),
    undefined,
    null,
    'ECONNREFUSED',
  ]) {
    assert.equal(isDatabaseUnavailable(err), false, String(err));
  }
});
