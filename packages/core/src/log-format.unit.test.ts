import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chooseLogFormat, formatLogLine } from './log-format.js';

test('auto is readable on a terminal and JSON otherwise; an explicit format wins', () => {
  assert.equal(chooseLogFormat('auto', true), 'pretty');
  assert.equal(chooseLogFormat('auto', false), 'json');
  assert.equal(chooseLogFormat('json', true), 'json');
  assert.equal(chooseLogFormat('pretty', false), 'pretty');
});

test('a record becomes one line with its fields, an error its stack below', () => {
  const time = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  const line = formatLogLine(
    JSON.stringify({
      level: 40,
      time,
      pid: 1,
      hostname: 'h',
      name: 'kiln-api',
      msg: 'slow',
      build: 'b1',
      n: 2,
    }),
  );
  assert.equal(line, '03:04:05.678 WARN  kiln-api: slow  build=b1 n=2\n');
  const withErr = formatLogLine(
    JSON.stringify({
      level: 50,
      time,
      name: 'w',
      msg: 'x',
      err: { message: 'boom', stack: 'Error: boom\n  at f' },
    }),
  );
  assert.equal(withErr, '03:04:05.678 ERROR w: x\n    Error: boom\n      at f\n');
  assert.equal(formatLogLine('not json'), 'not json\n');
});

// The real choice, in a real process: under `script` its stdout is a pseudo-terminal.
const root = fileURLToPath(new URL('../../..', import.meta.url));
const program =
  "import { createLogger } from '@kiln/core'; createLogger('kiln-t', 'info', 'auto').info({ a: 1 }, 'hello');";
const nodeArgs = ['--conditions=kiln-source', '--import', 'tsx', '--input-type=module', '-e', program];

test('createLogger with auto writes JSON into a pipe and a readable line onto a terminal', () => {
  const piped = execFileSync(process.execPath, nodeArgs, { cwd: root, encoding: 'utf8' });
  const record = JSON.parse(piped.trim());
  assert.equal(record.msg, 'hello');
  assert.equal(record.a, 1);
  const quoted = [process.execPath, ...nodeArgs].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const onTty = execFileSync('script', ['-qec', quoted, '/dev/null'], { cwd: root, encoding: 'utf8' });
  assert.match(onTty, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}kiln-t: hello {2}a=1\r?\n$/);
});
