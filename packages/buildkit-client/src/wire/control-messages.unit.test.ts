import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  decodeDiskUsageResponse,
  decodeInfoResponse,
  decodeListWorkersResponse,
  decodeSolveResponse,
  decodeStatusResponse,
  decodeUsageRecord,
  encodeFilterRequest,
  encodePruneRequest,
  encodeSolveRequest,
  encodeStatusRequest,
  type SolveRequest,
} from './control-messages.js';
import { encodeEmpty, ProtoWriter, writeStringMap } from './protobuf.js';

// The vendored proto, read by protobufjs: the reference the hand-written codecs must match.
const root = protobuf.loadSync(
  fileURLToPath(new URL('../../proto/moby/buildkit/v1/control.proto', import.meta.url)),
);
const type = (name: string) => root.lookupType(`moby.buildkit.v1.${name}`);
const toObject = (name: string, buf: Buffer) =>
  type(name).toObject(type(name).decode(buf), { longs: String, defaults: true, arrays: true, objects: true });
const encode = (name: string, obj: object) =>
  Buffer.from(type(name).encode(type(name).fromObject(obj)).finish());

const ts = { seconds: 1_764_000_000, nanos: 123_456_789 };

test('SolveRequest: what protobufjs reads from the hand-written encoding', () => {
  const request: SolveRequest = {
    Ref: 'ref-1',
    Exporter: 'tar',
    ExporterAttrs: { dest: 'out.tar', 'ä key': 'ü value' },
    Session: 'session-1',
    Frontend: 'dockerfile.v0',
    FrontendAttrs: { 'build-arg:A': '1', target: 'final', empty: '' },
    Cache: {
      Exports: [{ Type: 's3', Attrs: { prefix: 'p/' } }],
      Imports: [
        { Type: 'local', Attrs: { src: 'a' } },
        { Type: 's3', Attrs: {} },
      ],
    },
  };
  // The fields the client never sets read as their defaults.
  assert.deepEqual(toObject('SolveRequest', encodeSolveRequest(request)), {
    ...request,
    Entitlements: [],
    Internal: false,
    Exporters: [],
  });
});

test('the other requests: Status, ListWorkers/DiskUsage filters, Prune, Info', () => {
  assert.deepEqual(toObject('StatusRequest', encodeStatusRequest('abc')), { Ref: 'abc' });
  assert.deepEqual(toObject('ListWorkersRequest', encodeFilterRequest(['a==b', 'c'])), {
    filter: ['a==b', 'c'],
  });
  assert.deepEqual(toObject('DiskUsageRequest', encodeFilterRequest([])), { filter: [] });
  assert.equal(encodeEmpty().length, 0);
  const prune = { filter: ['type==regular'], all: true, keepDuration: 48 * 3600 * 1e9, keepBytes: 2 ** 40 };
  assert.deepEqual(toObject('PruneRequest', encodePruneRequest(prune)), {
    ...prune,
    keepDuration: String(prune.keepDuration),
    keepBytes: String(prune.keepBytes),
  });
});

test('StatusResponse: every field the client reads, from protobufjs', () => {
  const full = {
    vertexes: [
      {
        digest: 'sha256:aa',
        inputs: ['sha256:b1', 'sha256:b2'],
        name: '[stage 1/2] RUN make',
        cached: true,
        started: ts,
        completed: { seconds: 1_764_000_001, nanos: 0 },
        error: 'exit code 2',
      },
    ],
    statuses: [
      {
        ID: 'transferring context:',
        vertex: 'sha256:aa',
        name: 'transferring',
        current: 2 ** 40,
        total: 5,
        timestamp: ts,
        started: ts,
        completed: ts,
      },
    ],
    logs: [{ vertex: 'sha256:aa', timestamp: ts, stream: 2, msg: Buffer.from('line\n') }],
    warnings: [
      {
        vertex: 'sha256:aa',
        level: 1,
        short: Buffer.from('short'),
        detail: [Buffer.from('d1'), Buffer.from('d2')],
        url: 'https://docs.example/w',
      },
    ],
  };
  assert.deepEqual(decodeStatusResponse(encode('StatusResponse', full)), full);
  // Absent fields read as the proto's defaults (timestamps as null).
  assert.deepEqual(decodeStatusResponse(encode('StatusResponse', { vertexes: [{ digest: 'sha256:cc' }] })), {
    vertexes: [
      { digest: 'sha256:cc', inputs: [], name: '', cached: false, started: null, completed: null, error: '' },
    ],
    statuses: [],
    logs: [],
    warnings: [],
  });
});

test('SolveResponse, Info, ListWorkers, DiskUsage and Prune records, from protobufjs', () => {
  assert.deepEqual(
    decodeSolveResponse(
      encode('SolveResponse', { ExporterResponse: { 'containerimage.digest': 'sha256:dd' } }),
    ),
    { ExporterResponse: { 'containerimage.digest': 'sha256:dd' } },
  );
  const version = { package: 'github.com/moby/buildkit', version: 'v0.24.0', revision: 'b772c318' };
  assert.deepEqual(decodeInfoResponse(encode('InfoResponse', { buildkitVersion: version })), {
    buildkitVersion: version,
  });
  // Docker 20.10's BuildKit has no Info; an empty answer still gives a version object.
  assert.deepEqual(decodeInfoResponse(Buffer.alloc(0)), {
    buildkitVersion: { package: '', version: '', revision: '' },
  });

  const workers = encode('ListWorkersResponse', {
    record: [
      {
        ID: 'w1',
        Labels: { 'org.mobyproject.buildkit.worker.executor': 'oci' },
        platforms: [
          { Architecture: 'amd64', OS: 'linux' },
          { Architecture: 'arm', OS: 'linux', Variant: 'v7', OSFeatures: ['x'] },
        ],
        GCPolicy: [{ all: true, keepDuration: 10, keepBytes: 20, filters: ['f'] }],
        BuildkitVersion: version,
      },
      { ID: 'w2' },
    ],
  });
  assert.deepEqual(decodeListWorkersResponse(workers), {
    record: [
      {
        ID: 'w1',
        Labels: { 'org.mobyproject.buildkit.worker.executor': 'oci' },
        platforms: [
          { Architecture: 'amd64', OS: 'linux', Variant: '' },
          { Architecture: 'arm', OS: 'linux', Variant: 'v7' },
        ],
        BuildkitVersion: version,
      },
      { ID: 'w2', Labels: {}, platforms: [], BuildkitVersion: null },
    ],
  });

  const record = {
    ID: 'r1',
    Mutable: true,
    InUse: true,
    Size: 2 ** 33,
    Parent: 'p',
    CreatedAt: ts,
    LastUsedAt: ts,
    UsageCount: 3,
    Description: 'mount / from exec',
    RecordType: 'regular',
    Shared: true,
    Parents: ['p'],
  };
  const expected = { ...record, Parent: undefined, Parents: undefined };
  delete expected.Parent;
  delete expected.Parents;
  assert.deepEqual(decodeUsageRecord(encode('UsageRecord', record)), expected);
  assert.deepEqual(decodeDiskUsageResponse(encode('DiskUsageResponse', { record: [record, { ID: 'r2' }] })), {
    record: [
      expected,
      {
        ID: 'r2',
        Mutable: false,
        InUse: false,
        Size: 0,
        CreatedAt: null,
        LastUsedAt: null,
        UsageCount: 0,
        Description: '',
        RecordType: '',
        Shared: false,
      },
    ],
  });
});

test('a map key named __proto__ stays an own entry', () => {
  const map = JSON.parse('{"__proto__": "x", "a": "b"}') as Record<string, string>;
  const res = decodeSolveResponse(writeStringMap(new ProtoWriter(), 1, map).finish());
  assert.equal(Object.getPrototypeOf(res.ExporterResponse), Object.prototype);
  assert.deepEqual(Object.entries(res.ExporterResponse).sort(), [
    ['__proto__', 'x'],
    ['a', 'b'],
  ]);
});
