import assert from 'node:assert/strict';
import { test } from 'node:test';
import { redactAddress } from './redact-address.js';

test('redactAddress hides credentials and query strings, keeps the rest', () => {
  assert.equal(redactAddress('tcp://user:secret@host:1234?token=x'), 'tcp://***@host:1234?***');
  assert.equal(
    redactAddress('dial tcp://a:b@10.0.0.1:1234: refused'),
    'dial tcp://***@10.0.0.1:1234: refused',
  );
  assert.equal(redactAddress('docker:///var/run/docker.sock'), 'docker:///var/run/docker.sock');
  assert.equal(redactAddress('unix:///run/buildkit/buildkitd.sock'), 'unix:///run/buildkit/buildkitd.sock');
  // A token with a `/` in it (the URL then does not parse): still hidden.
  assert.equal(redactAddress('https://user:ab/cd@host/x.git'), 'https://***@host/x.git');
});
