// `kiln projects` and `kiln tokens` command lines: what each becomes, what is refused (exit 2),
// and that the operator's commands never fall back to the project token.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { UsageError } from '../errors.js';
import type { Io } from '../io.js';
import { main } from '../main.js';
import { parseProjects } from './projects.js';
import { parseTokenCreate } from './tokens.js';

describe('kiln projects arguments', () => {
  test('create: quotas as whole numbers, only those given', () => {
    assert.deepEqual(parseProjects(['create', 'web', '--max-queued', '10', '--max-artifact-bytes=1000000']), {
      command: 'create',
      name: 'web',
      quotas: { queuedBuilds: 10, artifactBytes: 1_000_000 },
      operatorToken: undefined,
      json: false,
    });
    assert.deepEqual(parseProjects(['create', 'web', '--operator-token', 'op', '--json']), {
      command: 'create',
      name: 'web',
      quotas: {},
      operatorToken: 'op',
      json: true,
    });
  });

  test('set: N or default (null), --disable / --enable', () => {
    assert.deepEqual(
      parseProjects(['set', 'web', '--max-running', '2', '--max-queued', 'default', '--disable']),
      {
        command: 'set',
        project: 'web',
        change: { disabled: true, quotas: { queuedBuilds: null, runningBuilds: 2 } },
        operatorToken: undefined,
        json: false,
      },
    );
    assert.deepEqual(parseProjects(['set', 'web', '--enable']), {
      command: 'set',
      project: 'web',
      change: { disabled: false },
      operatorToken: undefined,
      json: false,
    });
  });

  test('ls, show, token', () => {
    assert.deepEqual(parseProjects(['ls', '--json']), {
      command: 'ls',
      operatorToken: undefined,
      json: true,
    });
    assert.deepEqual(parseProjects(['show', 'web']), {
      command: 'show',
      project: 'web',
      operatorToken: undefined,
      json: false,
    });
    assert.deepEqual(parseProjects(['token', 'web', 'ci', '--scope', 'build']), {
      command: 'token',
      project: 'web',
      name: 'ci',
      scope: 'build',
      operatorToken: undefined,
      json: false,
    });
    assert.deepEqual(parseProjects(['set', '--help']), { command: 'help' });
  });

  const refused: [string[], RegExp][] = [
    [[], /requires a command/],
    [['rm', 'web'], /unknown command "kiln projects rm"/],
    [['ls', 'extra'], /"kiln projects ls" takes no arguments/],
    [['create'], /requires exactly 1 argument \(NAME\)/],
    [['create', 'web', '--max-queued=-1'], /--max-queued "-1": a whole number$/],
    [['create', 'web', '--max-running', 'default'], /--max-running "default": a whole number$/],
    [['create', 'web', '--max-artifact-bytes', '1.5'], /--max-artifact-bytes "1.5"/],
    [['set', 'web', '--max-queued', 'lots'], /--max-queued "lots": a whole number or default/],
    [['set', 'web'], /needs something to change/],
    [['set', 'web', '--disable', '--enable'], /cannot be used together/],
    [['token', 'web'], /requires exactly 2 arguments \(PROJECT TOKEN_NAME\)/],
    [['token', 'web', 'ci', '--scope', 'admin'], /--scope "admin": use one of read, build, manage/],
    [['show', 'web', '--disable'], /Unknown option '--disable'/],
  ];
  for (const [argv, message] of refused) {
    test(`refused: kiln projects ${argv.join(' ')}`, () => {
      assert.throws(
        () => parseProjects(argv),
        (err) => err instanceof UsageError && message.test(err.message),
      );
    });
  }
});

describe('kiln tokens arguments', () => {
  test('create NAME [--scope]', () => {
    assert.deepEqual(parseTokenCreate(['ci']), { name: 'ci', scope: undefined, json: false });
    assert.deepEqual(parseTokenCreate(['ci', '--scope=read', '--json']), {
      name: 'ci',
      scope: 'read',
      json: true,
    });
    assert.throws(() => parseTokenCreate([]), /requires exactly 1 argument \(NAME\)/);
    assert.throws(() => parseTokenCreate(['ci', '--scope', 'all']), /--scope "all"/);
  });
});

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

async function run(argv: string[], env: Record<string, string>) {
  const stdout = new Capture();
  const stderr = new Capture();
  const io = { stdout, stderr, env, cwd: '/', onInterrupt: () => () => {} } as unknown as Io;
  return { code: await main(argv, io), stdout: stdout.text, stderr: stderr.text };
}

test('kiln projects without an operator token: exit 2 before any request, even with KILN_TOKEN', async () => {
  // An unreachable URL: a request would be a different error (exit 1).
  const r = await run(['projects', 'ls'], {
    HOME: '/nonexistent',
    KILN_URL: 'http://127.0.0.1:1',
    KILN_TOKEN: 'project',
  });
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    'error: the operator token is required: pass --operator-token or set KILN_OPERATOR_TOKEN\n',
  );
  assert.equal(r.stdout, '');
});

test('kiln tokens and kiln projects --help: usage on stdout, exit 0', async () => {
  for (const argv of [
    ['tokens', '--help'],
    ['projects', '-h'],
    ['projects', 'token', '--help'],
    ['tokens', 'create', '-h'],
  ]) {
    const r = await run(argv, { HOME: '/nonexistent' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: kiln (tokens|projects) COMMAND/);
  }
});
