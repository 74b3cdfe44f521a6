import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileGlob, MAX_WILDCARD_PATTERN_CHARS, PatternError, PatternMatcher } from './patternmatcher.js';
import { compileRe2 } from './re2.js';

const PATTERNS = [
  '*',
  'file*',
  '*file',
  'a*/b',
  '**/**',
  '**/dir2/*',
  '**/dir2/**',
  '**/file*txt',
  '**/**/*.txt',
  'a[b-d]e',
  '.*',
  'abc?def',
  '*.[ch]',
  '[[:digit:]]*x*',
  '\\d*\\w*',
  '[^a-c]*[é-ü]*',
  '\\pL*?',
  'x*\\bfoo\\B*',
  'a\\Q*x*\\E*',
  '*a*a*a*b',
  '**/*.log',
  '**/node_modules/**',
];
const PATHS = [
  '',
  'a',
  'file',
  'file.txt',
  'dir/file.txt',
  'x/dir2/y',
  'x/dir2/y/z',
  'abe',
  'aee',
  'abcXdef',
  'main.c',
  'src/main.h',
  '12ab_x',
  'αβγ?',
  'zéü',
  'x foo',
  'xfoox',
  'a*x*x',
  'aaaab',
  'aab/b',
  'a\nb',
  '😀*😀',
  'a/b/c.log',
  'x/node_modules/y',
  'node_modules/',
];

describe('compileRe2', () => {
  it('gives the same answers on its linear engine as on a RegExp', () => {
    let compared = 0;
    for (const pattern of PATTERNS) {
      const { type, source } = compileGlob(pattern);
      const re = type === 'regexp' ? source : `^${pattern}$`;
      const native = compileRe2(re, 'regexp');
      const vm = compileRe2(re, 'vm');
      for (const path of PATHS) {
        assert.equal(vm(path), native(path), `${JSON.stringify(pattern)} on ${JSON.stringify(path)}`);
        compared++;
      }
    }
    assert.equal(compared, PATTERNS.length * PATHS.length);
  });

  it('matches in linear time where a RegExp backtracks for minutes', { timeout: 20_000 }, () => {
    // 12 stars: a RegExp takes about 90 s on this path, and far longer as it grows.
    const { source } = compileGlob('x*a*a*a*a*a*a*a*a*a*a*a*b');
    const test = compileRe2(source);
    assert.equal(test(`x${'a'.repeat(4000)}`), false);
    assert.equal(test(`x${'a'.repeat(4000)}b`), true);
  });

  it('bounds what a tenant can make every path be matched against', () => {
    // One long line of `**/` (a chain of splits that a recursive simulation overflowed on) fits...
    const long = `${'**/'.repeat(4000)}b`;
    const matcher = new PatternMatcher([long]);
    assert.equal(matcher.matchesOrParentMatches(`${'a/'.repeat(100)}b`), true);
    // ...many of them do not.
    assert.throws(
      () => new PatternMatcher(Array.from({ length: 2 }, () => long)),
      (err: unknown) =>
        err instanceof PatternError && err.code === 'BAD_PATTERN' && /over the 16384/.test(err.message),
    );
    assert.equal(MAX_WILDCARD_PATTERN_CHARS, 16 * 1024);
  });
});
