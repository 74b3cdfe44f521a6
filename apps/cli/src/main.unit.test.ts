// The command line in-process through main(argv, io): flags as docker takes them, usage errors
// (exit 2), the config file written by login (mode 0600, $XDG_CONFIG_HOME or $HOME), env overrides.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { sendForever } from '../test/endless-answer.js';
import { buildSpec, parseBuildOptions, serverDest } from './args.js';
import { configPath, loadConfig } from './config.js';
import { type CliError, InterruptedError } from './errors.js';
import type { Io } from './io.js';
import { main } from './main.js';
import { buildQuery } from './upload.js';

class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

function fakeIo(env: Record<string, string | undefined> = {}, stdin = '') {
  const stdout = new Capture();
  const stderr = new Capture();
  const input = new PassThrough();
  input.end(stdin);
  const io: Io = { stdout, stderr, stdin: input, env, cwd: '/', onInterrupt: () => () => {} };
  return { io, stdout, stderr };
}

async function run(argv: string[], env: Record<string, string | undefined> = {}, stdin = '') {
  const { io, stdout, stderr } = fakeIo(env, stdin);
  const code = await main(argv, io);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('kiln build flags', () => {
  test('docker build flags become the spec', () => {
    const opts = parseBuildOptions(
      [
        '-f',
        'docker/Dockerfile',
        '--target=builder',
        '--build-arg',
        'A=1',
        '--build-arg',
        'B=x=y',
        '--build-arg',
        'FROM_ENV',
        '--build-arg',
        'UNSET',
        '--platform',
        'linux/arm64',
        '--network',
        'none',
        '--no-cache',
        '--label',
        'org.example=1',
        '--label',
        'bare',
        '--provenance',
        'mode=max',
        '-o',
        'type=tar,dest=out/app.tar',
        '--progress',
        'json',
        'ctx',
      ],
      { FROM_ENV: 'from-env' },
      true,
    );
    assert.deepEqual(opts, {
      context: { kind: 'dir', path: 'ctx' },
      file: 'docker/Dockerfile',
      output: { type: 'tar', dest: 'out/app.tar', attrs: {} },
      target: 'builder',
      buildArgs: { A: '1', B: 'x=y', FROM_ENV: 'from-env' },
      platform: 'linux/arm64',
      network: 'none',
      noCache: true,
      labels: { 'org.example': '1', bare: '' },
      provenance: 'mode=max',
      secrets: [],
      progress: 'json',
    });
    if (opts === 'help') return;
    const query = buildQuery({ ...buildSpec(opts), file: 'docker/Dockerfile' });
    assert.equal(
      query.toString(),
      'output=%7B%22type%22%3A%22tar%22%2C%22dest%22%3A%22app.tar%22%7D&file=docker%2FDockerfile&target=builder&platform=linux%2Farm64&network=none&noCache=true&provenance=mode%3Dmax&build-arg=A%3D1&build-arg=B%3Dx%3Dy&build-arg=FROM_ENV%3Dfrom-env&label=org.example%3D1&label=bare%3D',
    );
  });

  test("boolean flags take docker's =true / =false, the last one winning", () => {
    const noCache = (...flags: string[]) => {
      const r = parseBuildOptions([...flags, '-o', 'type=tar,dest=a.tar', '.'], {}, false);
      return r === 'help' ? undefined : r.noCache;
    };
    assert.equal(noCache('--no-cache=true'), true);
    assert.equal(noCache('--no-cache=1'), true);
    assert.equal(noCache('--no-cache=false'), false);
    assert.equal(noCache('--no-cache', '--no-cache=false'), false);
    assert.equal(noCache('--no-cache=False', '--no-cache'), true);
    const quiet = parseBuildOptions(['-q', '--quiet=false', '-o', 'type=tar,dest=a.tar', '.'], {}, false);
    assert.ok(quiet !== 'help' && quiet.progress !== 'quiet');
    assert.throws(() => noCache('--no-cache=yes'), /invalid argument "yes" for "--no-cache": true or false/);
    // After `--`, nothing is a flag: it is the context's path.
    const after = parseBuildOptions(['-o', 'type=tar,dest=a.tar', '--', '--no-cache=true'], {}, false);
    assert.ok(after !== 'help' && !after.noCache && after.context.kind === 'dir');
  });

  test('--output forms: csv with quotes, -, missing dest (stdout unless it is a terminal), oci attrs', () => {
    const out = (o: string, tty = false) => {
      const r = parseBuildOptions(['-o', o, '.'], {}, tty);
      return r === 'help' ? undefined : r.output;
    };
    assert.deepEqual(out('type=tar,dest="a,b.tar"'), { type: 'tar', dest: 'a,b.tar', attrs: {} });
    assert.deepEqual(out('-'), { type: 'tar', dest: '-', attrs: {} });
    assert.deepEqual(out('type=tar'), { type: 'tar', dest: '-', attrs: {} });
    assert.throws(() => out('type=tar', true), /refusing to write to console/);
    assert.throws(() => out('-', true), /refusing to write to console/);
    assert.throws(() => out('type=oci,dest=-', true), /refusing to write to console/);
    assert.deepEqual(out('type=oci,dest=img.tar,name=example/app'), {
      type: 'oci',
      dest: 'img.tar',
      attrs: { name: 'example/app' },
    });
    assert.equal(serverDest('/tmp/my app (1).tar', 'tar'), 'my_app__1_.tar');
    assert.equal(serverDest('-', 'tar'), 'output.tar');
    // Only what a storage key takes: no `+` or `@`, nothing hidden or option-like.
    assert.equal(serverDest('app+1@v2.tar', 'tar'), 'app_1_v2.tar');
    assert.equal(serverDest('/tmp/.app.tar', 'tar'), '_app.tar');
    assert.equal(serverDest('-x.tar', 'oci'), '_x.tar');
    assert.equal(serverDest('..', 'oci'), 'image-oci.tar');
  });

  test('--platform repeated adds up, as buildx takes it; an empty one or an empty context is refused', () => {
    const opts = parseBuildOptions(
      ['-o', 'type=tar,dest=x.tar', '--platform', 'linux/amd64', '--platform', 'linux/arm64,linux/386', '.'],
      {},
      false,
    );
    assert.ok(opts !== 'help');
    assert.equal(opts.platform, 'linux/amd64,linux/arm64,linux/386');
    assert.throws(
      () => parseBuildOptions(['-o', 'type=tar,dest=x.tar', '--platform', '', '.'], {}, false),
      /--platform "" has an empty platform/,
    );
    for (const values of [['linux/amd64', ''], ['linux/amd64,'], [',linux/386']]) {
      const argv = ['-o', 'type=tar,dest=x.tar', ...values.flatMap((v) => ['--platform', v]), '.'];
      assert.throws(() => parseBuildOptions(argv, {}, false), /has an empty platform/, values.join(' '));
    }
    assert.throws(
      () => parseBuildOptions(['-o', 'type=tar,dest=x.tar', ''], {}, false),
      (err: CliError) => err.exitCode === 2 && /the context path is empty/.test(err.message),
    );
  });

  test('--secret takes docker forms; values are read when the build starts', () => {
    const r = parseBuildOptions(
      [
        '-o',
        'type=tar,dest=a.tar',
        '--secret',
        'id=npm,src=.npmrc',
        '--secret',
        'id=gh,env=GH_TOKEN',
        '--secret',
        'type=env,id=x,src=X',
        '--secret',
        'id=plain',
        '.',
      ],
      {},
      false,
    );
    assert.ok(r !== 'help');
    assert.deepEqual(r.secrets, [
      { id: 'npm', src: '.npmrc' },
      { id: 'gh', env: 'GH_TOKEN' },
      { id: 'x', env: 'X' },
      { id: 'plain' },
    ]);
  });

  const usageCases: [string[], RegExp][] = [
    [['build', '.'], /needs --output/],
    [['build', '-o', 'type=tar,dest=a.tar'], /requires exactly 1 argument/],
    [['build', '-o', 'type=tar,dest=a.tar', 'a', 'b'], /requires exactly 1 argument/],
    [['build', '--pull', '-o', 'type=tar,dest=a.tar', '.'], /Unknown option '--pull'/],
    [
      ['build', '-o', 'out-dir', '.'],
      /type=local .* not supported by kiln yet: use type=tar,dest=out-dir\.tar/,
    ],
    [['build', '-o', 'type=image,name=x,dest=a', '.'], /type=image takes no dest/],
    [['build', '-o', 'type=zip', '.'], /use one of tar, oci, docker, image/],
    [['build', '-o', 'dest=a.tar', '.'], /type is required/],
    [['build', '-o', 'type=tar,dest=a', '-o', 'type=tar,dest=b', '.'], /only one --output/],
    [['build', '-o', 'type=tar,dest=a', '--network', 'host', '.'], /--network "host" is not supported/],
    [['build', '-o', 'type=tar,dest=a', '--progress', 'fancy', '.'], /--progress "fancy"/],
    [['build', '-o', 'type=tar,dest=a', '--build-arg', '=x', '.'], /--build-arg "=x"/],
    [
      ['build', '-o', 'type=tar,dest=a', '--build-arg', 'BUILDKIT_CACHE_MOUNT_NS=x', '.'],
      /--build-arg: build arg "BUILDKIT_CACHE_MOUNT_NS" is reserved/,
    ],
    [['build', '-o', 'type=tar,dest=a', '--secret', 'src=.npmrc', '.'], /invalid --secret "src=.npmrc"/],
    [['build', '-o', 'type=tar,dest=a', '--secret', 'id=a,mode=0400', '.'], /unexpected key "mode"/],
    [['build', '-o', 'type=tar,dest=a', '--ssh', 'default', '.'], /--ssh is not supported yet/],
    [
      ['build', '-o', 'type=tar,dest=a', '-f', '-', '-'],
      /stdin cannot be both the build context and the Dockerfile/,
    ],
    [['build', '-o', 'type=tar,dest=a', '-f', '-', 'git://h/r'], /-f - cannot be used with a git context/],
    [['build', '-o', 'type=tar,dest=a', 'https://h/app.tar.gz'], /not remote tarballs or Dockerfiles/],
    [['builds'], /requires a command/],
    [['builds', 'rm', 'x'], /unknown command "kiln builds rm"/],
    [['builds', 'show'], /requires exactly 1 argument/],
    [['builds', 'show', 'not-an-id!'], /is not a build ID/],
    [['builds', 'ls', '--status', 'done'], /--status "done"/],
    [['builds', 'ls', '--limit', '0'], /--limit "0"/],
    [['builds', 'ls', '--limit', '1e1'], /--limit "1e1": a number from 1 to 100/],
    [['builds', 'ls', '--limit', '0x10'], /--limit "0x10"/],
    [['login', '--url', 'notaurl', '--token', 't'], /--url "notaurl" is not a URL/],
    [['login', '--url', 'ftp://h', '--token', 't'], /--url "ftp:\/\/h" must be http/],
    [['login', '--token', 't'], /--url is required/],
    [['login', '--url', 'http://x'], /--token .* is required/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [argv, message] of usageCases) {
    test(`exit 2: kiln ${argv.join(' ')}`, async () => {
      const r = await run(argv, { HOME: '/nonexistent' });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: /);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '');
    });
  }

  test('no command: usage on stderr, exit 2; --help: usage on stdout, exit 0', async () => {
    const none = await run([]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^Usage: kiln COMMAND/);
    for (const argv of [['--help'], ['build', '--help'], ['builds', '--help'], ['login', '-h']]) {
      const r = await run(argv);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^Usage: kiln/);
    }
  });
});

describe('config and login', () => {
  let home = '';
  let server: Server;
  let url = '';
  before(async () => {
    home = await mkdtemp(path.join(tmpdir(), 'kiln-cli-home-'));
    server = createServer((req, res) => {
      const ok = req.headers.authorization === 'Bearer good-token';
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          ok
            ? { items: [], nextCursor: null }
            : { error: { code: 'unauthorized', message: 'invalid token' } },
        ),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(home, { recursive: true, force: true });
  });

  test('config path: $XDG_CONFIG_HOME/kiln, else $HOME/.config/kiln', () => {
    assert.equal(configPath({ HOME: '/h' }), '/h/.config/kiln/config.json');
    assert.equal(configPath({ HOME: '/h', XDG_CONFIG_HOME: '/x' }), '/x/kiln/config.json');
    assert.equal(configPath({ HOME: '/h', XDG_CONFIG_HOME: 'relative' }), '/h/.config/kiln/config.json');
  });

  test('login checks the token, then writes the file 0600; a bad token writes nothing', async () => {
    const env = { HOME: home };
    const bad = await run(['login', '--url', `${url}/`, '--token', 'bad'], env);
    assert.equal(bad.code, 4);
    assert.equal(
      bad.stderr,
      `error: invalid token (unauthorized)\nhint: Kiln at ${url} refused this token: make one with kiln tokens create, or ask the operator (kiln projects token)\n`,
    );
    await assert.rejects(stat(configPath(env)), { code: 'ENOENT' });

    const good = await run(['login', '--url', `${url}/`, '--token', 'good-token'], env);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /^Login Succeeded/);
    const file = configPath(env);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { url, token: 'good-token' });

    // --token-stdin, under XDG_CONFIG_HOME.
    const xdg = { HOME: home, XDG_CONFIG_HOME: path.join(home, 'xdg') };
    const piped = await run(['login', '--url', url, '--token-stdin'], xdg, 'good-token\n');
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(
      JSON.parse(await readFile(path.join(home, 'xdg/kiln/config.json'), 'utf8')).token,
      'good-token',
    );
  });

  test('login: a bad --url is a usage error, a bad KILN_URL is named as the environment', async () => {
    const flag = await run(['login', '--url', 'h:1', '--token', 't'], { HOME: home });
    assert.equal(flag.code, 2, flag.stderr);
    assert.equal(flag.stderr, 'error: --url "h:1" must be http:// or https://\n');
    const env = await run(['login', '--token', 't'], { HOME: home, KILN_URL: 'notaurl' });
    assert.equal(env.code, 1, env.stderr);
    assert.equal(env.stderr, 'error: KILN_URL "notaurl" is not a URL (e.g. http://127.0.0.1:8080)\n');
  });

  test('a config file that is not JSON is named, without quoting it (it holds the token)', async () => {
    const broken = path.join(home, 'broken');
    const env = { HOME: home, XDG_CONFIG_HOME: broken };
    await mkdir(path.join(broken, 'kiln'), { recursive: true });
    await writeFile(path.join(broken, 'kiln/config.json'), `{"url": "${url}", "token": kiln_SECRET_0123}`);
    const res = await run(['builds', 'ls'], env);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /config\.json is not a valid config file \(not JSON\): run kiln login again/);
    assert.equal(res.stderr.includes('SECRET'), false, res.stderr);
  });

  test('KILN_URL and KILN_TOKEN override the file', async () => {
    const env = { HOME: home };
    assert.deepEqual(await loadConfig(env), {
      url,
      token: 'good-token',
      source: { url: 'file', token: 'file' },
    });
    assert.deepEqual(await loadConfig({ ...env, KILN_URL: 'http://other:1/', KILN_TOKEN: 'env-token' }), {
      url: 'http://other:1',
      token: 'env-token',
      source: { url: 'env', token: 'env' },
    });
    await assert.rejects(loadConfig({ ...env, KILN_URL: 'ftp://x' }), /KILN_URL "ftp:\/\/x" must be http/);
    // Credentials would be printed and stored with the URL; a query or fragment would swallow the paths.
    for (const [bad, message] of [
      ['http://admin:hunter2@h:1/', /^KILN_URL "http:\/\/\*\*\*@h:1\/" holds a user name or password/],
      ['http://admin@h:1', /holds a user name or password/],
      ['ftp://admin:hunter2@h/', /^KILN_URL "ftp:\/\/\*\*\*@h\/" must be http/],
      ['http://h:1/?x=1', /^KILN_URL "http:\/\/h:1\/\?x=1" has a query or fragment/],
      ['http://h:1/#f', /has a query or fragment/],
      ['http://h:1/?', /has a query or fragment/],
      ['http://u:pa/ss@h:1', /^KILN_URL "http:\/\/\*\*\*@h:1" /],
    ] as const) {
      const err = await loadConfig({ ...env, KILN_URL: bad }).then(
        () => assert.fail(bad),
        (e: Error) => e,
      );
      assert.match(err.message, message, bad);
      assert.ok(!/hunter2|pa\/ss/.test(err.message), bad);
    }
    // One saved by an older kiln login: the message names the file and how to replace it.
    const old = { HOME: path.join(home, 'old'), XDG_CONFIG_HOME: '' };
    await mkdir(path.dirname(configPath(old)), { recursive: true });
    await writeFile(configPath(old), JSON.stringify({ url: 'http://u:hunter2@h:1', token: 'good-token' }));
    await assert.rejects(loadConfig(old), {
      message: `the Kiln URL in ${configPath(old)} (kiln login --url replaces it) "http://***@h:1" holds a user name or password: Kiln authenticates with the token (kiln login, KILN_TOKEN)`,
    });
    // The API answers through the saved login.
    const r = await run(['builds', 'ls'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'BUILD ID  STATUS  CREATED  DURATION  OUTPUT  SIZE\n');
    const denied = await run(['builds', 'ls'], { ...env, KILN_TOKEN: 'nope' });
    assert.equal(denied.code, 4);
    // KILN_TOKEN overrides the saved login: logging in again would not help.
    assert.equal(
      denied.stderr,
      'error: invalid token (unauthorized)\nhint: KILN_TOKEN is set and overrides kiln login: check its value, or unset it\n',
    );
  });

  test('a token that cannot be a header value is refused naming its source, never shown, exit 4', async () => {
    const env = { HOME: home, KILN_URL: url };
    // Two tokens in one variable (a log line grepped twice): not "cannot reach Kiln".
    const two = await run(['builds', 'ls'], { ...env, KILN_TOKEN: 'kiln_aaa\nkiln_bbb' });
    assert.equal(two.code, 4);
    assert.equal(
      two.stderr,
      'error: KILN_TOKEN is not a Kiln token: it contains a line break at character 9 (a token is one word of printable ASCII) (invalid_token)\nhint: KILN_TOKEN is set and overrides kiln login: check its value, or unset it\n',
    );
    for (const [token, what] of [
      ['kiln_a b', 'whitespace'],
      ['kiln_\u0007', 'a control character'],
      ['kiln_é', 'a character outside ASCII'],
    ] as const) {
      const r = await run(['builds', 'ls'], { ...env, KILN_TOKEN: token });
      assert.equal(r.code, 4, token);
      assert.match(r.stderr, new RegExp(`KILN_TOKEN is not a Kiln token: it contains ${what} at character`));
      assert.ok(!r.stderr.includes(token), 'the token is not printed');
    }
    // Surrounding whitespace, as a CRLF file leaves it, is dropped.
    const crlf = await run(['builds', 'ls'], { ...env, KILN_TOKEN: ' good-token\r\n' });
    assert.equal(crlf.code, 0, crlf.stderr);

    const login = await run(['login', '--url', url, '--token-stdin'], { HOME: home }, 'good-token\nsecond\n');
    assert.equal(login.code, 4);
    // No hint to run the command that was just run.
    assert.match(
      login.stderr,
      /^error: the token on stdin is not a Kiln token: it contains a line break[^\n]*\n$/,
    );
    const op = await run(['projects', 'ls'], { ...env, KILN_OPERATOR_TOKEN: 'op\ttoken' });
    assert.equal(op.code, 4);
    assert.match(
      op.stderr,
      /^error: KILN_OPERATOR_TOKEN is not a Kiln token: it contains whitespace.*\nhint: pass --operator-token/,
    );
  });

  test('an ID of . or .. is refused before a request (the URL parser would collapse it)', async () => {
    const env = { HOME: home, KILN_URL: url, KILN_TOKEN: 'good-token', KILN_OPERATOR_TOKEN: 'op' };
    for (const argv of [
      ['tokens', 'revoke', '..'],
      ['projects', 'show', '..'],
      ['projects', 'token', '.', 'ci'],
    ]) {
      const r = await run(argv, env);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^error: "\.{1,2}" is not a (token ID|project)/);
    }
  });

  test("answers that are not the API's own: not JSON, lacking a field or broken off (exit 3), a redirect, escapes", async () => {
    const odd = createServer((req, res) => {
      if (req.url?.startsWith('/html/'))
        res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html>');
      else if (req.url?.startsWith('/empty/')) res.writeHead(200).end();
      else if (req.url?.startsWith('/other/')) {
        // JSON, but not this API's: an item without the status every build has.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ items: [{ id: 'b1', spec: {}, createdAt: 't', links: {} }] }));
      } else if (req.url?.startsWith('/null/')) res.writeHead(200).end('null');
      else if (req.url?.startsWith('/moved/'))
        res.writeHead(301, { location: 'https://kiln.example/' }).end();
      else if (req.url?.startsWith('/huge/')) {
        // A server that never stops: the CLI stops reading past 16 MiB.
        res.writeHead(200, { 'content-type': 'application/json' });
        sendForever(res, 0x20);
      } else if (req.url?.startsWith('/cycle/')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ items: [], nextCursor: 'c1' }));
      } else if (req.url?.startsWith('/escapes/')) {
        const message = 'bad\x1b[2J\x1b]0;pwned\x07 spec\x1b[1A\u009b2J\x1b]2;t\x1b\\!';
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'invalid_spec', message } }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
        res.write('{"items":[');
        setTimeout(() => res.destroy(), 20);
      }
    });
    await new Promise<void>((resolve) => odd.listen(0, '127.0.0.1', resolve));
    const at = `http://127.0.0.1:${(odd.address() as AddressInfo).port}`;
    try {
      const env = { HOME: home, KILN_TOKEN: 'good-token' };
      for (const [prefix, stderr] of [
        ['html', `answered 200 with text/html, not the API's JSON: is it the API's address? (bad_answer)`],
        [
          'empty',
          `answered 200 with an empty body, not the API's JSON: is it the API's address? (bad_answer)`,
        ],
        ['broken', 'broke off: aborted (unreachable)'],
        [
          'other',
          `answered 200 without "items[0].status": is it the API's address, and a Kiln of this CLI's version? (bad_answer)`,
        ],
        [
          'null',
          `answered 200 without "items": is it the API's address, and a Kiln of this CLI's version? (bad_answer)`,
        ],
        ['huge', `answered 200 with more than 16777216 bytes: is it the API's address? (bad_answer)`],
        ['cycle', `gave the build list's cursor c1 again: stopped paging (bad_answer)`],
      ] as const) {
        const r = await run(['builds', 'ls', '--all'], { ...env, KILN_URL: `${at}/${prefix}` });
        assert.equal(r.code, 3, r.stderr);
        assert.ok(r.stderr.startsWith('error: ') && r.stderr.includes(`${at}/${prefix}`), r.stderr);
        assert.ok(r.stderr.endsWith(`${stderr}\n`), r.stderr);
      }
      // Not followed, and said where to: the redirect could take the token elsewhere.
      const moved = await run(['builds', 'ls'], { ...env, KILN_URL: `${at}/moved` });
      assert.equal(moved.code, 1);
      assert.equal(
        moved.stderr,
        "error: 301 Moved Permanently: redirected to https://kiln.example/ (http_301)\nhint: the CLI does not follow redirects: set the Kiln URL to the API's own address\n",
      );
      // A server's message cannot clear the screen, retitle the window or move the cursor.
      const escapes = await run(['builds', 'ls'], { ...env, KILN_URL: `${at}/escapes` });
      assert.equal(escapes.code, 1);
      assert.equal(escapes.stderr, 'error: bad spec2J! (invalid_spec)\n');
    } finally {
      odd.closeAllConnections();
      await new Promise((resolve) => odd.close(resolve));
    }
  });

  test("names other members chose, and the server's ids, reach a terminal without escapes", async () => {
    const evil = 'ci\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J';
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === '/v1/tokens') {
        res.end(
          JSON.stringify({
            items: [{ id: 't1', name: evil, scope: 'build', createdAt: new Date().toISOString() }],
          }),
        );
      } else {
        res.end(
          JSON.stringify({
            items: [{ id: `b1${evil}`, status: 'queued', spec: {}, createdAt: 't', links: {} }],
          }),
        );
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const env = {
      HOME: home,
      KILN_TOKEN: 'good-token',
      KILN_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    };
    try {
      for (const argv of [
        ['tokens', 'ls'],
        ['builds', 'ls', '-q'],
      ]) {
        const { io, stdout } = fakeIo(env);
        stdout.isTTY = true;
        assert.equal(await main(argv, io), 0);
        assert.ok(
          !stdout.text.includes('\x1b') && !stdout.text.includes('\x07'),
          `${argv.join(' ')}: ${JSON.stringify(stdout.text)}`,
        );
        assert.ok(stdout.text.includes(argv[0] === 'tokens' ? 't1        ci' : 'b1ci\n'), stdout.text);
      }
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('an unreachable server is an error naming it, exit 3', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const r = await run(['builds', 'ls'], { HOME: home, KILN_URL: `http://127.0.0.1:${port}` });
    assert.equal(r.code, 3);
    assert.equal(
      r.stderr,
      `error: cannot reach Kiln at http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port} (unreachable)\n`,
    );
  });
});

describe('kiln build: Ctrl-C before anything is sent', () => {
  // stdin that never sends a byte (a stalled pipe): reading it must not outlast the interrupt.
  for (const argv of [
    ['build', '-'],
    ['build', '-f', '-', '.'],
  ])
    test(`kiln ${argv.join(' ')} with stdin stalled: exit 130 at the interrupt`, {
      timeout: 20_000,
    }, async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'kiln-cli-stdin-'));
      try {
        const stdout = new Capture();
        const stderr = new Capture();
        const stdin = new PassThrough();
        let interrupt: (reason: CliError) => void = () => {};
        const io: Io = {
          stdout,
          stderr,
          stdin,
          env: { HOME: dir, KILN_URL: 'http://127.0.0.1:9', KILN_TOKEN: 'kiln_test' },
          cwd: dir,
          onInterrupt: (handler) => {
            interrupt = handler;
            return () => {};
          },
        };
        const code = main([...argv, '-o', 'type=tar,dest=out.tar'], io);
        setTimeout(() => interrupt(new InterruptedError()), 100);
        assert.equal(await code, 130);
        assert.equal(stderr.text, 'error: interrupted\n');
        assert.ok(stdin.destroyed);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
});
