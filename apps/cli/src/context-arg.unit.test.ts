// The PATH argument read as docker reads it: stdin, git URLs (rewritten to what the API takes)
// and directories; remote tarballs refused with what to do instead.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseContextArg } from './context-arg.js';

test('git URLs as docker recognises them, in the form the API takes', () => {
  const cases: Array<[string, string]> = [
    ['https://host/org/repo.git#main:sub/dir', 'https://host/org/repo.git#main:sub/dir'],
    ['http://host/repo.git', 'http://host/repo.git'],
    ['git://host/org/repo#v1', 'git://host/org/repo#v1'],
    ['github.com/org/repo', 'https://github.com/org/repo.git'],
    ['github.com/org/repo#main:app', 'https://github.com/org/repo.git#main:app'],
  ];
  for (const [arg, url] of cases) assert.deepEqual(parseContextArg(arg), { kind: 'git', url }, arg);
});

test('an SSH URL becomes https, and says so', () => {
  const r = parseContextArg('git@gitlab.example:group/app.git#main:svc');
  assert.equal(r.kind, 'git');
  assert.equal(r.kind === 'git' && r.url, 'https://gitlab.example/group/app.git#main:svc');
  assert.match((r.kind === 'git' && r.rewritten) || '', /is an SSH URL.*building https:\/\/gitlab\.example/);
  const bare = parseContextArg('git@h:o/r');
  assert.equal(bare.kind === 'git' && bare.url, 'https://h/o/r.git');
});

test('stdin, directories, and remote tarballs refused with exit 2', () => {
  assert.deepEqual(parseContextArg('-'), { kind: 'stdin' });
  assert.deepEqual(parseContextArg('./app'), { kind: 'dir', path: './app' });
  assert.deepEqual(parseContextArg('repo.git'), { kind: 'dir', path: 'repo.git' });
  assert.throws(
    () => parseContextArg('https://host/context.tar.gz'),
    (err: Error & { exitCode?: number }) =>
      err.exitCode === 2 && /not remote tarballs or Dockerfiles.*kiln build -/.test(err.message),
  );
});
