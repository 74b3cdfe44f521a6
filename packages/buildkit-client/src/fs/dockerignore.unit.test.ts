import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DockerignoreError, parseDockerignore } from './dockerignore.js';
import { PatternMatcher } from './patternmatcher.js';

describe('parseDockerignore (ignorefile.ReadAll)', () => {
  it('reads the ignorefile_test.go fixture', () => {
    const content =
      'test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ';
    assert.deepEqual(parseDockerignore(content), [
      'test1',
      'test2',
      'a/file/here',
      'lastfile',
      '!inverted/abs/path',
      '!',
      '!',
    ]);
  });

  it('returns nothing for an empty file', () => {
    assert.deepEqual(parseDockerignore(''), []);
    assert.deepEqual(parseDockerignore('\n\n'), []);
  });

  it('strips a UTF-8 byte order mark from the first line only', () => {
    assert.deepEqual(parseDockerignore('\uFEFFfoo\n\uFEFFbar'), ['foo', '\uFEFFbar']);
    assert.deepEqual(parseDockerignore('\uFEFF# comment\nx'), ['x']);
  });

  it('only treats "#" in the first column as a comment', () => {
    assert.deepEqual(parseDockerignore('#a\n  # b\n\t#c'), ['# b', '#c']);
  });

  it('handles CRLF line endings and Go whitespace', () => {
    assert.deepEqual(parseDockerignore('a\r\n  b  \r\n\u00a0c\u0085\r\n'), ['a', 'b', 'c']);
  });

  it('cleans paths and drops one leading slash after "!" handling', () => {
    assert.deepEqual(parseDockerignore('./a/../b/\n//c//d/\n!  /e/./f\n/\n!/\n../up\n/../root'), [
      'b',
      'c/d',
      '!e/f',
      '/',
      '!/',
      '../up',
      'root',
    ]);
  });

  it('keeps escapes and globs verbatim', () => {
    assert.deepEqual(parseDockerignore('**/*.go\n\\#literal\na\\ b\n[a-z]?'), [
      '**/*.go',
      '\\#literal',
      'a\\ b',
      '[a-z]?',
    ]);
  });

  it('rejects a line longer than bufio.Scanner accepts', () => {
    const ok = 'x'.repeat(64 * 1024 - 1);
    assert.deepEqual(parseDockerignore(`${ok}\nb`), [ok, 'b']);
    assert.throws(
      () => parseDockerignore(`a\n${'x'.repeat(64 * 1024)}`),
      (err: unknown) =>
        err instanceof DockerignoreError && err.code === 'DOCKERIGNORE_LINE_TOO_LONG' && err.line === 2,
    );
  });

  it('feeds PatternMatcher: the "!" of an empty exception is an error there', () => {
    assert.throws(() => new PatternMatcher(parseDockerignore('foo\n!\n')), {
      code: 'ILLEGAL_EXCLUSION_PATTERN',
    });
    const pm = new PatternMatcher(parseDockerignore('/node_modules\n**/*.log\n!keep.log\n'));
    assert.equal(pm.matchesOrParentMatches('node_modules/x/y.js'), true);
    assert.equal(pm.matchesOrParentMatches('a/b/c.log'), true);
    assert.equal(pm.matchesOrParentMatches('keep.log'), false);
    assert.equal(pm.matchesOrParentMatches('src/index.ts'), false);
  });
});
