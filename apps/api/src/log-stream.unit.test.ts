import assert from 'node:assert/strict';
import { test } from 'node:test';
import { entryIdAfter, parseEntryId } from './log-stream.js';

test('parseEntryId takes Redis stream ids only, each part within 64 bits', () => {
  assert.equal(parseEntryId('1733400000000-0'), '1733400000000-0');
  assert.equal(
    parseEntryId('18446744073709551615-18446744073709551615'),
    '18446744073709551615-18446744073709551615',
  );
  for (const bad of [
    undefined,
    '',
    '1',
    '1-',
    '-1',
    '1-2-3',
    'a-1',
    ' 1-1',
    '18446744073709551616-0',
    '0-99999999999999999999',
  ]) {
    assert.equal(parseEntryId(bad), undefined, String(bad));
  }
});

test('entryIdAfter compares milliseconds, then the sequence, as numbers', () => {
  assert.equal(entryIdAfter('10-0', '9-5'), true);
  assert.equal(entryIdAfter('9-10', '9-9'), true);
  assert.equal(entryIdAfter('9-9', '9-9'), false);
  assert.equal(entryIdAfter('18446744073709551615-0', '18446744073709551614-9'), true);
});
