// One build's trace end to end, with the real OpenTelemetry SDK and OTLP/HTTP exporter (JSON)
// sending to a receiver this test runs on loopback: the API's POST /v1/builds span, and under it
// the worker's queue wait and attempt, with the lease, the context fetch, the solve (a span per
// BuildKit step, cached ones marked) and the export into storage. Then a buildkitd v0.24 of this
// test's own, tracing to the same receiver (OTLP/HTTP protobuf), joins the build's trace through
// the traceparent the worker sends in the Solve call's gRPC metadata.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';
import { contextTar, runNonce } from './context.js';

interface OtlpValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: Array<{ key: string; value: OtlpValue }>;
  status?: { code?: number };
}
interface OtlpExport {
  resourceSpans: Array<{
    resource: { attributes: Array<{ key: string; value: OtlpValue }> };
    scopeSpans: Array<{ spans: OtlpSpan[] }>;
  }>;
}
interface Span {
  service: string;
  traceId: string;
  spanId: string;
  parent: string;
  name: string;
  start: number;
  end: number;
  attrs: Record<string, string | boolean | number | undefined>;
}

let kiln: TestKiln | undefined;
let receiver: Server;
const exports: OtlpExport[] = [];
/** What buildkitd sent: protobuf, searched for raw trace and span ids. */
const protobufBodies: Buffer[] = [];
let receiverUrl = '';
const execFileAsync = promisify(execFile);
const contentTypes = new Set<string>();

const otlpValue = (v: OtlpValue) =>
  v.stringValue ?? v.boolValue ?? (v.intValue === undefined ? undefined : Number(v.intValue));
const spans = (): Span[] =>
  exports.flatMap((e) =>
    e.resourceSpans.flatMap((rs) => {
      const service = String(
        otlpValue(rs.resource.attributes.find((a) => a.key === 'service.name')?.value ?? {}),
      );
      return rs.scopeSpans.flatMap((ss) =>
        ss.spans.map((s) => ({
          service,
          traceId: s.traceId,
          spanId: s.spanId,
          parent: s.parentSpanId ?? '',
          name: s.name,
          start: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1000,
          end: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1000,
          attrs: Object.fromEntries((s.attributes ?? []).map((a) => [a.key, otlpValue(a.value)])),
        })),
      );
    }),
  );

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const type = String(req.headers['content-type']);
      if (req.method === 'POST' && req.url === '/v1/traces' && type === 'application/x-protobuf') {
        protobufBodies.push(Buffer.concat(chunks));
      } else if (req.method === 'POST' && req.url === '/v1/traces') {
        contentTypes.add(type);
        exports.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`;
  kiln = await startTestKiln({ worker: true, env: { KILN_OTLP_TRACES_URL: receiverUrl } });
});
after(async () => {
  await kiln?.stop();
  receiver?.close();
});

test('one trace per build: request, queue wait, attempt, lease, context, solve with its steps (cached marked), export', async () => {
  const running = kiln as TestKiln;
  const tar = await contextTar();
  const api = (p: string, init: RequestInit = {}) =>
    fetch(`${running.url}${p}`, {
      ...init,
      headers: { authorization: `Bearer ${running.token}`, ...init.headers },
    });
  const ids: string[] = [];
  // The second build (another build arg) finds its first steps in BuildKit's cache.
  for (const n of [1, 2]) {
    const res = await api(
      `/v1/builds?output=type=tar,dest=n.tar&network=none&build-arg=N=traces-${runNonce}-${n}`,
      {
        method: 'POST',
        body: tar,
        headers: { 'content-type': 'application/gzip' },
      },
    );
    assert.equal(res.status, 202, await res.clone().text());
    const { id } = (await res.json()) as { id: string };
    const done = await waitForStatus<{ status: string }>(api, id, ['succeeded', 'failed'], 120_000);
    assert.equal(done.status, 'succeeded');
    ids.push(id);
  }
  // Stopping flushes both processes' batches to the receiver.
  kiln = undefined;
  await running.stop();
  assert.deepEqual([...contentTypes], ['application/json']);

  const all = spans();
  const roots = ids.map((id) => {
    const root = all.find((s) => s.name === 'POST /v1/builds' && s.attrs['kiln.build.id'] === id);
    assert.ok(root, `no POST /v1/builds span for ${id}`);
    return root;
  });
  assert.notEqual(roots[0]?.traceId, roots[1]?.traceId, 'each build has a trace of its own');
  const root = roots[1] as Span;
  assert.equal(root.service, 'kiln-api');
  assert.equal(root.parent, '');
  assert.equal(root.attrs['kiln.build.outcome'], 'queued');
  const trace = all.filter((s) => s.traceId === root.traceId);
  const one = (name: string, parent: Span) => {
    const found = trace.filter((s) => s.name === name && s.parent === parent.spanId);
    assert.equal(found.length, 1, `${name} under ${parent.name}: ${trace.map((s) => s.name).join(', ')}`);
    return found[0] as Span;
  };

  const wait = one('queue wait', root);
  const attempt = one('build attempt', root);
  assert.equal(wait.service, 'kiln-worker');
  assert.equal(attempt.service, 'kiln-worker');
  assert.equal(attempt.attrs['kiln.build.id'], ids[1]);
  assert.equal(attempt.attrs['kiln.build.result'], 'succeeded');
  // The wait starts when the API accepted the build and ends when the worker took it.
  assert.ok(wait.start >= root.start - 1 && wait.start <= root.end, 'queue wait starts within the request');
  assert.ok(wait.end <= attempt.start + 1, 'the attempt follows the wait');
  const lease = one('lease builder', attempt);
  const context = one('fetch context', attempt);
  const solve = one('solve', attempt);
  const exported = one('export to storage', attempt);
  assert.ok(String(lease.attrs['kiln.builder']).startsWith('docker://'));
  assert.ok(Number(exported.attrs['kiln.export.bytes']) > 1_000_000, 'the busybox binary is in the tar');
  for (const s of [lease, context, solve, exported]) {
    assert.ok(s.start >= attempt.start - 1 && s.end <= attempt.end + 1, `${s.name} lies within the attempt`);
  }
  assert.ok(
    lease.end <= context.start + 1 && context.end <= solve.start + 1,
    'lease, context, solve in order',
  );

  const steps = trace.filter((s) => s.parent === solve.spanId);
  const byName = (part: string) => steps.find((s) => s.name.includes(part));
  const copy = byName('COPY busybox');
  const run = byName('RUN');
  assert.ok(copy && run, steps.map((s) => s.name).join(', '));
  assert.equal(copy.attrs['buildkit.cached'], true, 'the COPY was in the cache from the first build');
  assert.equal(run.attrs['buildkit.cached'], false, 'the RUN has another build arg');
  assert.ok(typeof copy.attrs['buildkit.vertex.digest'] === 'string');
  for (const s of steps) assert.ok(s.end >= s.start && s.service === 'kiln-worker');
  // The first build ran both steps.
  const firstSteps = all.filter(
    (s) => s.traceId === roots[0]?.traceId && s.attrs['buildkit.cached'] !== undefined,
  );
  assert.ok(firstSteps.some((s) => s.name.includes('RUN') && s.attrs['buildkit.cached'] === false));
});

/** The OTLP/JSON exporter writes ids in hex; the protobuf carries their bytes. */
const idBytes = (id: string) => Buffer.from(id, /^[0-9a-f]+$/.test(id) ? 'hex' : 'base64');
const repo = new URL('../..', import.meta.url).pathname;
// Asynchronous: buildkitd (and buildctl, which the script runs) send spans to this process's receiver.
const buildkitdScript = (fn: string, dir: string, env: NodeJS.ProcessEnv = process.env) =>
  execFileAsync('bash', ['-c', `source scripts/lib/buildkitd.sh && ${fn} "$1"`, 'bash', dir], {
    cwd: repo,
    env,
  });

test("a buildkitd with tracing on puts its spans in the build's trace, under the worker's solve span", async () => {
  // Short: the socket path must stay under ~107 bytes.
  const dir = await mkdtemp('/tmp/kiln-otel-');
  await buildkitdScript('kiln_buildkitd_start', dir, {
    ...process.env,
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiverUrl,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf',
  });
  try {
    const traced = await startTestKiln({
      worker: true,
      env: { KILN_OTLP_TRACES_URL: receiverUrl, KILN_BUILDERS: `unix://${dir}/buildkitd.sock` },
    });
    const api = (p: string, init: RequestInit = {}) =>
      fetch(`${traced.url}${p}`, {
        ...init,
        headers: { authorization: `Bearer ${traced.token}`, ...init.headers },
      });
    let id: string;
    try {
      const res = await api(`/v1/builds?output=type=tar,dest=n.tar&network=none&build-arg=N=bk-${runNonce}`, {
        method: 'POST',
        body: await contextTar(),
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(res.status, 202, await res.clone().text());
      ({ id } = (await res.json()) as { id: string });
      const done = await waitForStatus<{ status: string }>(api, id, ['succeeded', 'failed'], 120_000);
      assert.equal(done.status, 'succeeded');
    } finally {
      await traced.stop();
    }
    const root = spans().find((s) => s.name === 'POST /v1/builds' && s.attrs['kiln.build.id'] === id);
    assert.ok(root);
    const solve = spans().find((s) => s.traceId === root.traceId && s.name === 'solve');
    assert.ok(solve);
    // buildkitd batches its spans (every few seconds): wait for one of this trace whose parent
    // is the worker's solve span (BuildKit's server span of the Solve call).
    const traceId = idBytes(root.traceId);
    const parent = idBytes(solve.spanId);
    const joined = () => protobufBodies.some((b) => b.includes(traceId) && b.includes(parent));
    for (let i = 0; i < 150 && !joined(); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(protobufBodies.length > 0, 'buildkitd sent no spans');
    assert.ok(joined(), "no buildkitd span in the build's trace under the solve span");
  } finally {
    await buildkitdScript('kiln_buildkitd_stop', dir);
    await rm(dir, { recursive: true, force: true });
  }
});
