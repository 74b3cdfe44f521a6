// The context upload against a loopback HTTP server: streamed (the server sees data before the
// tar has ended), gzip or raw, the server's early answer, read errors and Ctrl-C.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createGunzip } from 'node:zlib';
import { KilnApi } from './api.js';
import { CliError, InterruptedError } from './errors.js';
import { type BuildRequest, isRatioRejection, submitBuild, submitGitBuild } from './upload.js';

/** What a build answer must carry for the CLI to take it (api.ts BUILD). */
const VIEW = { id: 'B1', status: 'queued', spec: {}, createdAt: '2024-01-01T00:00:00.000Z', links: {} };
const REQUEST: BuildRequest = {
  output: { type: 'tar', dest: 'out.tar', attrs: {} },
  file: 'Dockerfile',
  buildArgs: {},
  labels: {},
};

const PEM = `-----BEGIN CERTIFICATE-----\n${'A'.repeat(16_000)}\n-----END CERTIFICATE-----`;

type Handler = (req: IncomingMessage, body: AsyncIterable<Buffer>) => Promise<[number, unknown]>;

describe('submitBuild', () => {
  let server: Server;
  let api: KilnApi;
  let handler: Handler = async () => [500, {}];

  before(async () => {
    server = createServer((req, res) => {
      const body = req.headers['content-type'] === 'application/gzip' ? req.pipe(createGunzip()) : req;
      handler(req, body).then(([status, json]) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(json));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    api = new KilnApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'tok');
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const drain = async (body: AsyncIterable<Buffer>) => {
    let n = 0;
    for await (const c of body) n += c.length;
    return n;
  };

  test('streams: the server reads half a MiB before the second MiB exists', async () => {
    let received = 0;
    let reachedHalf: () => void = () => {};
    const half = new Promise<void>((r) => {
      reachedHalf = r;
    });
    handler = async (req, body) => {
      assert.equal(req.headers.authorization, 'Bearer tok');
      const url = new URL(req.url ?? '', 'http://x');
      assert.equal(url.pathname, '/v1/builds');
      assert.equal(url.searchParams.get('file'), 'Dockerfile');
      for await (const c of body) {
        received += c.length;
        if (received >= 512 * 1024) reachedHalf(); // gzip keeps some input in flight
      }
      return [202, { ...VIEW, received }];
    };
    const tar = Readable.from(
      (async function* () {
        // Random: gzip holds compressible input back until it has a block's worth of output.
        for (let i = 0; i < 16; i++) yield randomBytes(64 * 1024);
        await half; // a client that buffered the whole body would wait here forever
        for (let i = 0; i < 16; i++) yield randomBytes(64 * 1024);
      })(),
    );
    const { build, sent } = await submitBuild(api, {
      request: REQUEST,
      tar,
    });
    assert.equal(build.id, 'B1');
    assert.equal((build as unknown as { received: number }).received, 2 << 20);
    assert.ok(sent > 2 << 20, `gzipped ${sent} bytes`); // random data grows a little
  });

  for (const [what, request] of [
    ['a build arg (where a token may be)', { ...REQUEST, buildArgs: { NPM_TOKEN: 'npm_s3cr3t' } }],
    ['a certificate as a build arg', { ...REQUEST, buildArgs: { CA: PEM } }],
    ['a spec too long for a URL (labels)', { ...REQUEST, labels: { CA: PEM } }],
  ] as const)
    test(`${what} goes as a JSON spec part, never in the URL`, async () => {
      handler = async (req, body) => {
        const chunks: Buffer[] = [];
        for await (const c of body) chunks.push(c);
        return [
          202,
          {
            ...VIEW,
            url: req.url,
            type: req.headers['content-type'],
            body: Buffer.concat(chunks).toString('latin1'),
          },
        ];
      };
      const { build } = await submitBuild(api, {
        request,
        tar: Readable.from([Buffer.alloc(100, 1)]),
        gzip: false,
      });
      const got = build as unknown as { url: string; type: string; body: string };
      assert.equal(got.url, '/v1/builds');
      assert.match(got.type, /^multipart\/form-data; boundary=/);
      const spec = /name="spec"\r\nContent-Type: application\/json\r\n\r\n(.*)\r\n--/.exec(got.body)?.[1];
      assert.deepEqual(JSON.parse(spec ?? 'null'), {
        output: { type: 'tar', dest: 'out.tar' },
        file: 'Dockerfile',
        buildArgs: request.buildArgs,
        labels: request.labels,
      });
    });

  test('gzip: false sends application/x-tar as it is', async () => {
    handler = async (req, body) => [
      202,
      { ...VIEW, type: req.headers['content-type'], n: await drain(body) },
    ];
    const { build, sent } = await submitBuild(api, {
      request: REQUEST,
      tar: Readable.from([Buffer.alloc(10_000, 1)]),
      gzip: false,
    });
    assert.deepEqual(build, { ...VIEW, type: 'application/x-tar', n: 10_000 });
    assert.equal(sent, 10_000);
  });

  test("the server's early answer is the error; the context stops being read", async () => {
    handler = async () => [400, { error: { code: 'invalid_spec', message: 'platform "x" is not os/arch' } }];
    let pulled = 0;
    const tar = new Readable({
      read() {
        pulled++;
        this.push(Buffer.alloc(64 * 1024, pulled)); // never ends by itself
      },
    });
    await assert.rejects(submitBuild(api, { request: REQUEST, tar }), {
      code: 'invalid_spec',
      message: 'platform "x" is not os/arch',
    });
    assert.ok(tar.destroyed);
    const ratio = new CliError(
      'the context decompresses more than 100:1 (maxDecompressionRatio)',
      1,
      'context_too_large',
    );
    assert.ok(isRatioRejection(ratio));
    assert.ok(!isRatioRejection(new CliError('the context is larger than 4 GB', 1, 'context_too_large')));
  });

  test('a context read error is the reported reason, not the broken request', async () => {
    handler = async (_req, body) => [202, { n: await drain(body).catch(() => -1) }];
    const tar = Readable.from(
      (async function* () {
        yield Buffer.alloc(100_000, 1);
        throw new CliError('cannot read big.bin in the context: EIO');
      })(),
    );
    await assert.rejects(submitBuild(api, { request: REQUEST, tar }), {
      message: 'cannot read big.bin in the context: EIO',
    });
  });

  test('a server that cannot be reached is unreachable (exit 3), not a failure to read the context', async () => {
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(gone.address() as AddressInfo).port}`;
    await new Promise((resolve) => gone.close(resolve));
    const tar = Readable.from([Buffer.alloc(100_000, 1)]);
    await assert.rejects(submitBuild(new KilnApi(url, 'tok'), { request: REQUEST, tar }), {
      code: 'unreachable',
      exitCode: 3,
      message: new RegExp(`^cannot reach Kiln at ${url}: connect ECONNREFUSED`),
    });
    assert.ok(tar.destroyed);
  });

  test('Ctrl-C while uploading rejects with InterruptedError and stops reading', async () => {
    handler = async (_req, body) => [202, { n: await drain(body).catch(() => -1) }];
    const controller = new AbortController();
    const tar = new Readable({
      read() {
        setTimeout(() => this.push(Buffer.alloc(16 * 1024, 7)), 5);
      },
    });
    setTimeout(() => controller.abort(new InterruptedError()), 100);
    await assert.rejects(
      submitBuild(api, { request: REQUEST, tar, signal: controller.signal }),
      InterruptedError,
    );
    assert.ok(tar.destroyed);
  });
});

test('Ctrl-C while a JSON POST waits for its answer: the build it created comes back (to be canceled)', async () => {
  let posted = 0;
  const server = createServer((req, res) => {
    posted++;
    req.resume();
    // The server creates the build, then answers after the interrupt.
    setTimeout(
      () => res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify(VIEW)),
      300,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const api = new KilnApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'tok');
    const controller = new AbortController();
    setTimeout(() => controller.abort(new InterruptedError()), 50);
    const build = await submitGitBuild(api, 'https://git.example/app.git', {}, undefined, controller.signal);
    assert.equal(build.id, VIEW.id);
    assert.ok(controller.signal.aborted);
    // Already interrupted: nothing is sent.
    await assert.rejects(
      submitGitBuild(api, 'https://git.example/app.git', {}, undefined, controller.signal),
      InterruptedError,
    );
    assert.equal(posted, 1);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
