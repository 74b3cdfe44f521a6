import assert from 'node:assert/strict';
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { AppError } from '../errors.js';
import { checkFrontendAllowed, frontendDirective, readFrontendDirective } from './syntax-directive.js';

const of = (text: string, complete = true) => frontendDirective(Buffer.from(text), complete);

test('finds the syntax directive in each form BuildKit reads', () => {
  for (const text of [
    '# syntax=docker/dockerfile:1\nFROM scratch\n',
    '#syntax = docker/dockerfile:1 \r\nFROM scratch\n',
    '\uFEFF# escape=`\n# SYNTAX=docker/dockerfile:1\nFROM scratch\n',
    '// syntax=docker/dockerfile:1\nFROM scratch\n',
    '\n# a comment first\n\n# syntax=docker/dockerfile:1\nFROM scratch\n',
    '{"syntax": "docker/dockerfile:1"}',
  ]) {
    assert.deepEqual(of(text), { kind: 'image', image: 'docker/dockerfile:1' }, JSON.stringify(text));
  }
});

test('no directive: none; a directive after the first instruction does not count', () => {
  for (const text of [
    'FROM scratch\n',
    'FROM scratch\n# syntax=docker/dockerfile:1\n',
    '# just a comment\nFROM scratch\n',
    '{not json',
    '{"other": 1}',
  ]) {
    assert.deepEqual(of(text), { kind: 'none' }, text);
  }
});

test('a JSON file longer than the head kept cannot be told', () => {
  assert.deepEqual(of('{"a": "', false), { kind: 'unknown', why: 'it is JSON longer than the bytes read' });
});

// Newer BuildKit drops a `#!` first line before reading directives (older ones stop at it).
test('after a #! first line: the directive and the JSON form are still found', () => {
  const evil = { kind: 'image', image: 'evil/frontend' };
  assert.deepEqual(of('#!/usr/bin/env docker\n# syntax=evil/frontend\nFROM scratch\n'), evil);
  assert.deepEqual(of('#!x\n{"syntax":"evil/frontend"}'), evil);
  assert.deepEqual(of('#!x\nFROM scratch\n'), { kind: 'none' });
  assert.deepEqual(of('#!only a shebang'), { kind: 'none' });
  // A #! line longer than the head kept hides what follows it.
  assert.deepEqual(of(`#!${'x'.repeat(100)}`, false), {
    kind: 'unknown',
    why: 'its first line (#!) is longer than the 102 bytes read',
  });
});

test('two different frontend images cannot be told apart (BuildKit versions disagree on the winner)', () => {
  const two = { kind: 'unknown', why: 'it names more than one frontend image' };
  assert.deepEqual(of('# syntax=allowed/frontend\n# syntax=evil/frontend\nFROM scratch\n'), two);
  assert.deepEqual(of('# syntax=allowed/frontend\n#\n// syntax=evil/frontend\n'), {
    kind: 'image',
    image: 'allowed/frontend',
  });
  assert.deepEqual(of('// syntax=a\n// syntax=b\n'), two);
  // The same image twice is one image.
  assert.deepEqual(of('# syntax=a\n# syntax=a\n'), { kind: 'image', image: 'a' });
});

test('checkFrontendAllowed: none passes, an allowed image passes, anything else is invalid_spec', () => {
  checkFrontendAllowed({ kind: 'none' }, []);
  checkFrontendAllowed({ kind: 'image', image: 'a/b:1' }, ['a/b:1']);
  assert.throws(
    () => checkFrontendAllowed({ kind: 'image', image: 'evil' }, ['a/b:1']),
    (e: AppError) =>
      e.code === 'invalid_spec' &&
      /selects the frontend image "evil" .*allows a\/b:1 \(KILN_ALLOWED_FRONTENDS\)/.test(e.message),
  );
  assert.throws(
    () => checkFrontendAllowed({ kind: 'unknown', why: 'it names more than one frontend image' }, []),
    (e: AppError) => e.code === 'invalid_spec' && /cannot tell .*more than one.*allows none/.test(e.message),
  );
});

test('readFrontendDirective reads the file a path names; not a regular file inside the context: invalid_context', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kiln-directive-'));
  const outside = await mkdtemp(path.join(tmpdir(), 'kiln-directive-out-'));
  try {
    await writeFile(path.join(dir, 'evil'), '# syntax=evil/frontend\nFROM scratch\n');
    await link(path.join(dir, 'evil'), path.join(dir, 'Dockerfile'));
    assert.deepEqual(await readFrontendDirective(dir, 'Dockerfile'), {
      kind: 'image',
      image: 'evil/frontend',
    });
    await mkdir(path.join(dir, 'sub'));
    await writeFile(path.join(dir, 'sub/Dockerfile'), `{"syntax": "${'x'.repeat(70 * 1024)}"}`);
    assert.equal((await readFrontendDirective(dir, 'sub/Dockerfile')).kind, 'unknown');
    await writeFile(path.join(outside, 'Dockerfile'), '# syntax=host/secret\n');
    await symlink(path.join(outside, 'Dockerfile'), path.join(dir, 'linked'));
    await symlink(outside, path.join(dir, 'away'));
    for (const file of ['missing', 'linked', 'away/Dockerfile', 'evil/Dockerfile']) {
      await assert.rejects(
        readFrontendDirective(dir, file),
        (e: AppError) => e.code === 'invalid_context',
        file,
      );
    }
    await assert.rejects(readFrontendDirective(dir, 'sub'), /is not a regular file/);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  }
});
