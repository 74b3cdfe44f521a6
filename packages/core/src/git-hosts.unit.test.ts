import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AppError } from './errors.js';
import { checkGitHost, type GitHostPolicy } from './git-hosts.js';
import { parseNetworks } from './net/address.js';
import { parseHostPatterns } from './net/host-patterns.js';

const policy = (allowed: string, denied: string, networks = ''): GitHostPolicy => ({
  allowedHosts: parseHostPatterns(allowed),
  deniedHosts: parseHostPatterns(denied),
  allowedNetworks: parseNetworks(networks),
});
const refused = (url: string, p: GitHostPolicy, pattern: RegExp) =>
  assert.throws(
    () => checkGitHost(url, p),
    (err: unknown) => err instanceof AppError && err.code === 'invalid_context' && pattern.test(err.message),
    url,
  );

test('no lists: public hosts pass; private, loopback and metadata literals and localhost do not', () => {
  const open = policy('', '');
  checkGitHost('https://github.com/o/r.git', open);
  checkGitHost('git://8.8.8.8/r.git', open);
  refused('git://127.0.0.1:9418/r.git', open, /git host 127\.0\.0\.1 is a loopback address/);
  refused('https://[::1]/r.git', open, /git host ::1 is a loopback/);
  refused('http://169.254.169.254/r.git', open, /metadata/);
  refused('http://0x7f.1/r.git', open, /127\.0\.0\.1 is a loopback/);
  refused('https://10.1.2.3/r.git', open, /private/);
  refused('git://localhost/r.git', open, /localhost is a loopback name/);
});

test("git:// hosts are judged as the resolver reads them: inet_aton's short, decimal and hex IPv4 forms", () => {
  const open = policy('', '');
  refused('git://127.1/r.git', open, /git host 127\.0\.0\.1 is a loopback address/);
  refused('git://2130706433/r.git', open, /127\.0\.0\.1 is a loopback/);
  refused('git://0x7f.1:9418/r.git', open, /127\.0\.0\.1 is a loopback/);
  refused('git://10.1/r.git', open, /10\.0\.0\.1 is a private address/);
  refused('git://169.254.43518/r.git', open, /169\.254\.169\.254 is the cloud metadata service/);
  refused('git://0177.0.0.1/r.git', open, /127\.0\.0\.1 is a loopback/);
  refused('git://[::ffff:7f00:1]/r.git', open, /loopback/);
  refused('git://a%00b/r.git', open, /is not a valid host/);
  checkGitHost('git://134744072/r.git', open); // 8.8.8.8
  checkGitHost('git://GIT.Example.com/r.git', policy('git.example.com', ''));
});

test('allowed networks let private literals through', () => {
  const p = policy('', '', '127.0.0.0/8');
  checkGitHost('git://127.0.0.1:9418/r.git', p);
  checkGitHost('git://localhost/r.git', p);
  refused('git://10.0.0.1/r.git', p, /private/);
});

test('allow and deny lists, deny first', () => {
  const p = policy('github.com,*.corp.example', 'bad.corp.example');
  checkGitHost('https://github.com/o/r.git', p);
  checkGitHost('https://git.corp.example/o/r.git', p);
  refused('https://gitlab.com/o/r.git', p, /gitlab\.com is not among the hosts/);
  refused('https://bad.corp.example/o/r.git', p, /bad\.corp\.example is denied/);
  refused('https://BAD.corp.example./o/r.git', p, /is denied/);
  refused('git://10.0.0.1/r.git', policy('', '10.0.0.1'), /10\.0\.0\.1 is denied/);
});
