import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ERROR_CODES } from '@kiln/contract';
import { ERROR_STATUS } from './errors.js';

test('every error code of the contract has an HTTP status, and no other code has one', () => {
  assert.deepEqual(Object.keys(ERROR_STATUS).sort(), [...ERROR_CODES].sort());
});
