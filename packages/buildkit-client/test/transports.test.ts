// The unix://, tcp:// and tcp:// + mTLS paths against a real BuildKit, reached through a
// relay (see test-support/relay.ts). These use the Control.Session tunnel, like buildkitd.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BuildkitConnectionError, type ConnectOptions, connect } from '../src/index.js';
import { makeContext } from '../test-support/context.js';
import { makeTestPki, type TestPki } from '../test-support/pki.js';
import { type Relay, startRelay } from '../test-support/relay.js';
import { run } from '../test-support/run.js';
import { tarExport } from '../test-support/tar-export.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK ?? '';
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

async function buildOnce(address: string, options: ConnectOptions = {}): Promise<Buffer> {
  const client = await connect(address, options);
  const ctx = await makeContext({
    Dockerfile: 'FROM scratch\nCOPY data /data\n',
    data: Buffer.alloc(2 * 1024 * 1024, 9),
  });
  try {
    const tar = tarExport();
    await client.solve({
      frontend: 'dockerfile.v0',
      localDirs: { context: ctx.dir, dockerfile: ctx.dir },
      exports: [tar],
    });
    return tar.bytes();
  } finally {
    await ctx.cleanup();
    await client.close();
  }
}

describe('transports', () => {
  let pki: TestPki;
  const relays: Relay[] = [];
  before(() => {
    pki = makeTestPki();
  });
  after(async () => {
    for (const r of relays) await r.close();
    pki.cleanup();
  });
  /** A tcp:// relay that requires mTLS with the test PKI's certificates. */
  async function startTlsRelay(): Promise<Relay> {
    const relay = await startRelay(socket, {
      tcp: true,
      tls: {
        key: fs.readFileSync(pki.serverKey),
        cert: fs.readFileSync(pki.serverCert),
        ca: fs.readFileSync(pki.ca),
      },
    });
    relays.push(relay);
    return relay;
  }

  test('unix:// address', async () => {
    const relay = await startRelay(socket, {
      unixPath: path.join(os.tmpdir(), `bkc-relay-${process.pid}.sock`),
    });
    relays.push(relay);
    const tar = await buildOnce(relay.address);
    assert.equal(tar.subarray(0, 4).toString(), 'data');
  });

  test('tcp:// address', async () => {
    const relay = await startRelay(socket, { tcp: true });
    relays.push(relay);
    const tar = await buildOnce(relay.address);
    assert.ok(tar.length > 2 * 1024 * 1024);
  });

  test('tcp:// with mTLS: right certificates build; missing or foreign ones are refused with a TLS hint', async () => {
    const relay = await startTlsRelay();
    const tar = await buildOnce(relay.address, {
      tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, serverName: 'buildkitd.test' },
    });
    assert.ok(tar.length > 2 * 1024 * 1024);

    await assert.rejects(connect(relay.address, { tls: { ca: pki.ca }, timeoutMs: 1500 }), (err: Error) => {
      assert.ok(err instanceof BuildkitConnectionError);
      assert.match(err.message, /TLS/);
      return true;
    });
    // A certificate that does not verify is named, and not dialed again until the timeout.
    const dialed = relay.connections;
    await assert.rejects(
      connect(relay.address, {
        tls: { ca: pki.otherCa, cert: pki.otherClientCert, key: pki.otherClientKey },
        timeoutMs: 1500,
      }),
      (err: Error) => {
        assert.ok(err instanceof BuildkitConnectionError);
        assert.match(err.message, /certificate|verify|self.signed/i);
        return true;
      },
    );
    assert.equal(relay.connections - dialed, 1);
    // Plain-text client against the TLS port.
    await assert.rejects(connect(relay.address, { timeoutMs: 1500 }), BuildkitConnectionError);
  });

  // bin/bkctl.js starts as sh, which drops NODE_EXTRA_CA_CERTS unless a --tls* flag is given.
  test('bkctl bin: Node starts without NODE_EXTRA_CA_CERTS unless a --tls* flag is given, and trusts it with one', async () => {
    const bin = path.resolve(import.meta.dirname, '../bin/bkctl.js');
    // The bin runs the node on PATH: this one. A module imported before bkctl's says whether the
    // process Node started has the variable.
    const probe = `process.stderr.write('extra-ca:' + (process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset') + '\\n')`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
      NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(probe)}`,
    };
    const withCa = { ...env, NODE_EXTRA_CA_CERTS: pki.ca };
    const seen = async (command: string, args: string[]) => {
      const r = await run(command, args, { env: withCa });
      assert.equal(r.code, 0, r.stderr);
      return /extra-ca:(\w+)/.exec(r.stderr)?.[1];
    };
    assert.equal(await seen(process.execPath, [bin, '--version']), 'set');
    assert.equal(await seen(bin, ['--version']), 'unset');
    assert.equal(await seen(bin, ['--tlscert=x', '--version']), 'set');
    assert.equal(await seen(bin, ['--addr', 'unix:///nowhere', '--tlskey', 'k', '--version']), 'set');

    const relay = await startTlsRelay();
    // No --tlscacert: the server's certificate verifies only through the CA NODE_EXTRA_CA_CERTS names.
    const args = [
      '--addr',
      relay.address,
      '--tlscert',
      pki.clientCert,
      '--tlskey',
      pki.clientKey,
      '--tlsservername',
      'buildkitd.test',
      'debug',
      'workers',
    ];
    const trusted = await run(bin, args, { env: withCa });
    assert.equal(trusted.code, 0, trusted.stderr);
    assert.match(trusted.stdout, /\tlinux\/amd64/);
    const withoutCa = { ...env };
    delete withoutCa.NODE_EXTRA_CA_CERTS;
    const untrusted = await run(bin, args, { env: withoutCa });
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, /certificate|verify|self.signed/i);
  });
});
