import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { inNetworks, parseIp, parseNetwork, parseNetworks, refusedAddress, specialRange } from './address.js';
import { refusedHost } from './host.js';
import { hostMatches, parseHostPatterns } from './host-patterns.js';

const range = (text: string) => {
  const ip = parseIp(text);
  assert.ok(ip, `${text} parses`);
  return specialRange(ip);
};
/** The address a URL's host becomes once WHATWG parsing normalized it. */
const urlHost = (url: string) => new URL(url).hostname;

describe('the address classifier', () => {
  test('special-purpose IPv4 ranges are named', () => {
    for (const [ip, why] of [
      ['0.0.0.0', /unspecified/],
      ['0.1.2.3', /unspecified/],
      ['10.0.0.1', /private/],
      ['10.255.255.255', /private/],
      ['100.64.0.1', /CGNAT/],
      ['100.127.255.255', /CGNAT/],
      ['127.0.0.1', /loopback/],
      ['127.255.255.254', /loopback/],
      ['169.254.169.254', /metadata/],
      ['169.254.0.1', /link-local/],
      ['172.16.0.1', /private/],
      ['172.31.255.255', /private/],
      ['192.168.1.1', /private/],
      ['192.0.0.8', /IETF/],
      ['192.0.2.1', /documentation/],
      ['198.18.0.1', /benchmarking/],
      ['198.19.255.255', /benchmarking/],
      ['224.0.0.1', /multicast/],
      ['239.255.255.250', /multicast/],
      ['255.255.255.255', /broadcast/],
      ['240.0.0.1', /reserved/],
    ] as const) {
      assert.match(range(ip) ?? 'public', why, ip);
    }
  });

  test('public IPv4 addresses next to the ranges are not', () => {
    for (const ip of [
      '1.1.1.1',
      '8.8.8.8',
      '9.255.255.255',
      '11.0.0.0',
      '100.63.255.255',
      '100.128.0.0',
      '126.255.255.255',
      '128.0.0.0',
      '169.253.255.255',
      '169.255.0.0',
      '172.15.255.255',
      '172.32.0.0',
      '192.167.255.255',
      '192.169.0.0',
      '198.17.255.255',
      '198.20.0.0',
      '223.255.255.255',
    ]) {
      assert.equal(range(ip), undefined, ip);
    }
  });

  test('IPv6: unspecified, loopback, unique local, link-local, multicast; public is public', () => {
    for (const [ip, why] of [
      ['::', /unspecified/],
      ['[::]', /unspecified/],
      ['::1', /loopback/],
      ['[0:0:0:0:0:0:0:1]', /loopback/],
      ['fc00::1', /unique local/],
      ['fd12:3456::1', /unique local/],
      ['fe80::1', /link-local/],
      ['fe80::1%eth0', /link-local/],
      ['febf::1', /link-local/],
      ['fec0::1', /site-local/],
      ['ff02::1', /multicast/],
      ['ff05::2', /multicast/],
      ['2001:db8::1', /documentation/],
      ['100::1', /discard/],
    ] as const) {
      assert.match(range(ip) ?? 'public', why, ip);
    }
    for (const ip of ['2606:4700:4700::1111', '2a00:1450:4001::200e', 'fbff::1']) {
      assert.equal(range(ip), undefined, ip);
    }
  });

  test('IPv6 forms of IPv4 addresses are judged by the IPv4 address', () => {
    for (const [ip, why] of [
      ['::ffff:127.0.0.1', /loopback.*\(IPv4-mapped\)/],
      ['::ffff:7f00:1', /loopback.*\(IPv4-mapped\)/],
      ['[::ffff:169.254.169.254]', /metadata/],
      ['::ffff:10.0.0.1', /private/],
      ['::ffff:0.0.0.0', /unspecified/],
      ['::127.0.0.1', /loopback.*\(IPv4-compatible\)/],
      ['64:ff9b::a00:1', /private.*\(NAT64\)/],
      ['2002:7f00:1::', /loopback.*\(6to4\)/],
      ['2002:a9fe:a9fe::1', /metadata.*\(6to4\)/],
    ] as const) {
      assert.match(range(ip) ?? 'public', why, ip);
    }
    assert.equal(range('::ffff:8.8.8.8'), undefined);
    assert.equal(range('64:ff9b::808:808'), undefined);
  });

  test('decimal, octal and hex IPv4 hosts: URL parsing makes them dotted-decimal, then they are refused', () => {
    for (const url of [
      'http://2130706433/',
      'http://0x7f.1/',
      'http://0x7f000001/',
      'http://0177.0.0.1/',
      'http://127.1/',
      'http://0/',
      'http://[::ffff:127.0.0.1]/',
      'http://[0:0:0:0:0:0:0:1]/',
      'http://0xa9.0xfe.0xa9.0xfe/',
      'http://2852039166/',
    ]) {
      const host = urlHost(url);
      assert.ok(range(host), `${url} → ${host}`);
    }
    assert.equal(urlHost('http://2130706433/'), '127.0.0.1');
    assert.equal(urlHost('http://0x7f.1/'), '127.0.0.1');
    assert.equal(urlHost('http://2852039166/'), '169.254.169.254');
  });

  test('names are not addresses', () => {
    for (const text of ['localhost', 'example.com', '1.2.3', '256.0.0.1', '', '::1::', '127.0.0.1.nip.io']) {
      assert.equal(parseIp(text), undefined, text);
    }
  });
});

describe('allowed networks', () => {
  test('CIDRs and single addresses parse; bad ones say why', () => {
    assert.deepEqual(
      parseNetworks(' 10.0.0.0/8, ,::1, fd00::/8').map((n) => [n.family, n.prefix]),
      [
        [4, 8],
        [6, 128],
        [6, 8],
      ],
    );
    for (const bad of [
      '10.0.0.0/33',
      '::/129',
      '10.0.0.0/',
      '10.0.0.0/8/8',
      'example.com/8',
      '10.0.0.0/-1',
    ]) {
      assert.throws(() => parseNetwork(bad), /not an IP address|prefix length/, bad);
    }
  });

  test('an allowed network lets its addresses through, and only those', () => {
    const allowed = parseNetworks('127.0.0.0/8,10.20.0.0/16');
    const check = (text: string) => {
      const ip = parseIp(text);
      assert.ok(ip);
      return refusedAddress(ip, allowed);
    };
    assert.equal(check('127.0.0.1'), undefined);
    assert.equal(check('::ffff:127.0.0.1'), undefined);
    assert.equal(check('10.20.3.4'), undefined);
    assert.match(check('10.21.0.1') ?? '', /private/);
    assert.match(check('::1') ?? '', /loopback/);
    assert.match(check('169.254.169.254') ?? '', /metadata/);
    assert.equal(check('8.8.8.8'), undefined);
    const ip = parseIp('172.16.5.5');
    assert.ok(ip);
    assert.ok(inNetworks(ip, parseNetworks('172.16.0.0/12')));
    assert.ok(!inNetworks(ip, parseNetworks('172.16.4.0/24')));
    assert.ok(inNetworks(ip, parseNetworks('0.0.0.0/0')));
  });
});

describe('hosts', () => {
  test('refusedHost: literals by range, localhost names as loopback, other names left to delivery', () => {
    assert.match(refusedHost('127.0.0.1', []) ?? '', /loopback/);
    assert.match(refusedHost('[::1]', []) ?? '', /loopback/);
    assert.match(refusedHost('localhost', []) ?? '', /loopback name/);
    assert.match(refusedHost('LocalHost.', []) ?? '', /loopback name/);
    assert.match(refusedHost('api.localhost', []) ?? '', /loopback name/);
    assert.equal(refusedHost('localhost.example.com', []), undefined);
    assert.equal(refusedHost('example.com', []), undefined);
    assert.equal(refusedHost('localhost', parseNetworks('127.0.0.0/8')), undefined);
  });

  test('host patterns: exact names, *.domain below the domain, addresses normalized', () => {
    const patterns = parseHostPatterns('Git.Example.com, *.corp.example, ::1, 10.0.0.5');
    assert.deepEqual(patterns, ['git.example.com', '*.corp.example', '::1', '10.0.0.5']);
    assert.ok(hostMatches('git.example.com', patterns));
    assert.ok(hostMatches('GIT.example.com.', patterns));
    assert.ok(hostMatches('a.corp.example', patterns));
    assert.ok(hostMatches('a.b.corp.example', patterns));
    assert.ok(!hostMatches('corp.example', patterns));
    assert.ok(!hostMatches('evilcorp.example', patterns));
    assert.ok(!hostMatches('example.com', patterns));
    assert.ok(hostMatches('[::1]', patterns));
    assert.ok(hostMatches(urlHost('http://[0:0::1]/'), patterns));
    assert.ok(hostMatches('10.0.0.5', patterns));
    for (const bad of ['a b', 'host/path', 'host:22', 'user@host', '*.[::1]']) {
      assert.throws(() => parseHostPatterns(bad), /not a host/, bad);
    }
  });
});
