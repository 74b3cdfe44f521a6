import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientAddressKey } from './client-address.js';

test('IPv4 addresses count alone, also when mapped into IPv6', () => {
  assert.equal(clientAddressKey('203.0.113.7'), '203.0.113.7');
  assert.equal(clientAddressKey('::ffff:203.0.113.7'), '203.0.113.7');
  assert.equal(clientAddressKey('::FFFF:203.0.113.8'), '203.0.113.8');
  // Any spelling of ::ffff:0:0/96 is the IPv4 address it maps, not one shared /64.
  assert.equal(clientAddressKey('::ffff:cb00:7107'), '203.0.113.7');
  assert.equal(clientAddressKey('0:0:0:0:0:ffff:203.0.113.9'), '203.0.113.9');
  assert.equal(clientAddressKey('::ffff:203.0.113.7%eth0'), '203.0.113.7');
  assert.equal(clientAddressKey('::ffff:0:203.0.113.7'), '0:0:0:0::/64'); // SIIT, not mapped
});

test('IPv6 addresses count by their /64, however they are written', () => {
  const key = '2001:db8:1:2::/64';
  for (const ip of [
    '2001:db8:1:2::1',
    '2001:db8:1:2:ffff:ffff:ffff:ffff',
    '2001:0db8:0001:0002:0000:0000:0000:0001',
    '2001:DB8:1:2:a:b:c:d',
    '2001:db8:1:2:0:0:1.2.3.4',
  ]) {
    assert.equal(clientAddressKey(ip), key, ip);
  }
  assert.notEqual(clientAddressKey('2001:db8:1:3::1'), key);
  assert.equal(clientAddressKey('::1'), '0:0:0:0::/64');
  assert.equal(clientAddressKey('2001:db8::'), '2001:db8:0:0::/64');
  assert.equal(clientAddressKey('::2001:db8:1:2:3'), '0:0:0:2001::/64');
  assert.equal(clientAddressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
});

test('anything else is its own key', () => {
  assert.equal(clientAddressKey('not-an-address'), 'not-an-address');
  assert.equal(clientAddressKey(''), '');
});
