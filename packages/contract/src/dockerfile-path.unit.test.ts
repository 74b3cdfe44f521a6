import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dockerfileInContext } from './dockerfile-path.js';

test('paths inside the context come back normalized', () => {
  assert.equal(dockerfileInContext('Dockerfile'), 'Dockerfile');
  assert.equal(dockerfileInContext('./Dockerfile'), 'Dockerfile');
  assert.equal(dockerfileInContext('././Dockerfile'), 'Dockerfile');
  assert.equal(dockerfileInContext('sub/Dockerfile'), 'sub/Dockerfile');
  assert.equal(dockerfileInContext('sub//app.Dockerfile'), 'sub/app.Dockerfile');
  assert.equal(dockerfileInContext('a/../b/Dockerfile'), 'b/Dockerfile');
  assert.equal(dockerfileInContext('a/b/../../Dockerfile'), 'Dockerfile');
  // Dots inside a name are not path steps.
  assert.equal(dockerfileInContext('..Dockerfile'), '..Dockerfile');
  assert.equal(dockerfileInContext('sub/...'), 'sub/...');
});

test('paths that leave the context are refused', () => {
  for (const file of ['../x', '..', '../Dockerfile', 'a/../../x', '../ctx/Dockerfile', './../x']) {
    assert.equal(dockerfileInContext(file), undefined, file);
  }
});

test('absolute paths are refused', () => {
  for (const file of ['/abs', '/Dockerfile', '//Dockerfile'])
    assert.equal(dockerfileInContext(file), undefined, file);
});

test('paths naming a directory are refused', () => {
  for (const file of ['', '.', './', 'a/..', 'a/b/..', 'sub/', 'sub/.', 'Dockerfile/']) {
    assert.equal(dockerfileInContext(file), undefined, JSON.stringify(file));
  }
});

test('backslashes and NUL are refused', () => {
  for (const file of ['sub\\Dockerfile', '..\\x', 'C:\\Dockerfile', 'Docker\0file', '\0']) {
    assert.equal(dockerfileInContext(file), undefined, JSON.stringify(file));
  }
});
