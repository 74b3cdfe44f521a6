import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AppError } from './errors.js';
import { gitContextAttr, gitRefColumn, isCommitId, parseGitContext } from './git-context.js';

const SHA = 'a'.repeat(40);
const refused = (value: unknown, pattern: RegExp) =>
  assert.throws(
    () => parseGitContext(value),
    (err: unknown) => err instanceof AppError && err.code === 'invalid_spec' && pattern.test(err.message),
  );

describe('git contexts', () => {
  test('url, ref and subdirectory', () => {
    assert.deepEqual(parseGitContext('https://h/o/r.git'), { url: 'https://h/o/r.git' });
    assert.deepEqual(parseGitContext('https://h/o/r.git#main'), { url: 'https://h/o/r.git', ref: 'main' });
    assert.deepEqual(parseGitContext('git://127.0.0.1:9418/r.git#v1.2:docker/app/'), {
      url: 'git://127.0.0.1:9418/r.git',
      ref: 'v1.2',
      subdir: 'docker/app',
    });
    assert.deepEqual(parseGitContext('git://h/r#:sub'), { url: 'git://h/r', subdir: 'sub' });
    assert.deepEqual(parseGitContext('git://h/r#main:.'), { url: 'git://h/r', ref: 'main' });
  });

  test('what BuildKit would misread or leak is refused', () => {
    refused('file:///etc/x.git', /only http, https and git/);
    refused('https://h/o/r', /must end in \.git/);
    refused('https://h/o/r.git?x=1', /must not have a query/);
    // BuildKit reads these from any scheme's query, past the checks on #ref:subdir.
    refused('git://h/o/r.git?subdir=../../..&ref=-x&keep-git-dir=1#main', /must not have a query/);
    refused('git://h/o/r.git?#main', /must not have a query/);
    refused('http://h/o/r.git?', /must not have a query/);
    refused('https://u:token@h/o/r.git', /credentials/);
    refused('https://h/o/r.git#--upload-pack=x', /not a valid branch/);
    refused('https://h/o/r.git#a..b', /not a valid branch/);
    refused('https://h/o/r.git#main:../up', /inside the repository/);
    refused('https://h/o/r.git#main:/abs', /inside the repository/);
    refused('https://h/o r.git', /spaces/);
    refused('http://ok.example\\@127.0.0.1/r.git', /backslashes/);
    refused(42, /must be a string/);
    refused('not a url', /spaces|not a URL/);
    // A URL that does not parse is quoted without its user info (a token, as often as not).
    refused(
      'https://oauth2:glpat-SECRET@gitlab.example:group/repo.git',
      /^(?!.*glpat-SECRET).*"https:\/\/\*\*\*@gitlab\.example:group\/repo\.git" is not a URL/,
    );
  });

  test('stored form and the BuildKit attribute pin the commit', () => {
    assert.equal(gitRefColumn({ url: 'git://h/r', ref: 'main', subdir: 'app' }), 'main:app');
    assert.equal(gitRefColumn({ url: 'git://h/r' }), null);
    assert.equal(gitContextAttr({ gitUrl: 'git://h/r', gitRef: null, gitCommit: null }), 'git://h/r');
    assert.equal(
      gitContextAttr({ gitUrl: 'git://h/r', gitRef: 'main:app', gitCommit: null }),
      'git://h/r#main:app',
    );
    assert.equal(
      gitContextAttr({ gitUrl: 'git://h/r', gitRef: 'refs/heads/main', gitCommit: SHA }),
      `git://h/r#${SHA}`,
    );
    assert.equal(
      gitContextAttr({ gitUrl: 'git://h/r', gitRef: 'x:app', gitCommit: SHA }),
      `git://h/r#${SHA}:app`,
    );
    assert.ok(isCommitId(SHA));
    assert.ok(!isCommitId('main'));
  });
});
