import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { credentialsKey } from './credentials-keys.js';
import { AppError } from './errors.js';
import { parseNetworks } from './net/address.js';
import {
  checkRegistryHost,
  decryptSecret,
  encryptSecret,
  normalizeRegistryHost,
} from './registry-credentials.js';
import { imageRegistryHosts, parseBuildSpec } from './spec.js';

const key = credentialsKey('k'.repeat(40));
const policy = { allowedHosts: [], deniedHosts: [], allowedNetworks: [] };

describe('registry credentials', () => {
  test('encrypted under the key, bound to project and host', () => {
    const stored = encryptSecret(key, 'p1', 'reg.example', 's3cret');
    assert.ok(!stored.includes('s3cret'));
    assert.notEqual(encryptSecret(key, 'p1', 'reg.example', 's3cret'), stored, 'a fresh IV each time');
    assert.equal(decryptSecret(key, 'p1', 'reg.example', stored), 's3cret');
    assert.throws(() => decryptSecret(key, 'p2', 'reg.example', stored));
    assert.throws(() => decryptSecret(key, 'p1', 'evil.example', stored));
    assert.throws(() => decryptSecret(credentialsKey('x'.repeat(40)), 'p1', 'reg.example', stored));
    // A tag cut to 4 bytes: 2^32 guesses would forge one.
    const [version, iv, tag, body] = stored.split(':') as [string, string, string, string];
    const cut = [version, iv, Buffer.from(tag, 'base64').subarray(0, 4).toString('base64'), body].join(':');
    assert.throws(() => decryptSecret(key, 'p1', 'reg.example', cut));
  });

  test('hosts as BuildKit asks for them', () => {
    assert.equal(normalizeRegistryHost('Registry.Example:5000'), 'registry.example:5000');
    assert.equal(normalizeRegistryHost('docker.io'), 'registry-1.docker.io');
    assert.equal(normalizeRegistryHost('[::1]:5000'), '[::1]:5000');
    for (const bad of [
      'https://reg.example',
      'reg example',
      '',
      'a/b',
      'x.com:99999',
      'x.com:0',
      '[::1]:70000',
    ])
      assert.throws(() => normalizeRegistryHost(bad), AppError);
  });

  test('push targets: internal addresses refused unless allowed, lists honoured', () => {
    for (const host of ['127.0.0.1:5000', '10.0.0.1', '169.254.169.254', 'localhost:5000', '[::1]:5000'])
      assert.throws(() => checkRegistryHost(host, policy), /does not push/, host);
    checkRegistryHost('127.0.0.1:5000', { ...policy, allowedNetworks: parseNetworks('127.0.0.0/8') });
    checkRegistryHost('registry.example', policy);
    assert.throws(
      () => checkRegistryHost('registry.example', { ...policy, deniedHosts: ['registry.example'] }),
      /denied/,
    );
    assert.throws(
      () => checkRegistryHost('other.example', { ...policy, allowedHosts: ['registry.example'] }),
      /not among/,
    );
    // Docker Hub under any of its names.
    for (const host of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
      assert.throws(() => checkRegistryHost(host, { ...policy, deniedHosts: ['docker.io'] }), /denied/, host);
      assert.throws(
        () => checkRegistryHost(host, { ...policy, deniedHosts: ['index.docker.io'] }),
        /denied/,
        host,
      );
      checkRegistryHost(host, { ...policy, allowedHosts: ['registry-1.docker.io'] });
    }
  });

  test('the hosts an image output pushes to', () => {
    const hosts = (name: string) =>
      imageRegistryHosts(parseBuildSpec({ output: { type: 'image', name, push: 'true' } }));
    assert.deepEqual(hosts('team/app:1'), ['docker.io']);
    assert.deepEqual(hosts('reg.example:5000/team/app:1,team/app:2'), ['reg.example:5000', 'docker.io']);
    assert.deepEqual(hosts('localhost:5000/a'), ['localhost:5000']);
    // An upper-case first component is a host to docker and BuildKit, so it is to the policy.
    assert.deepEqual(hosts('Localhost/app:1'), ['localhost']);
    assert.deepEqual(hosts('Registry/app'), ['registry']);
    assert.deepEqual(imageRegistryHosts(parseBuildSpec({})), []);
  });
});
