import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  decodeDigestRequest,
  decodeReadContentRequest,
  decodeRefRequest,
  decodeUpdateRequest,
  decodeWriteContentRequest,
  encodeInfoResponse,
  encodeReadContentResponse,
  encodeWriteContentResponse,
} from './content-messages.js';
import { encodeEmpty } from './protobuf.js';

// The vendored proto, read by protobufjs: the reference the hand-written codecs must match.
const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/containerd/services/content/v1/content.proto', import.meta.url)),
  { keepCase: true },
);
const type = (name: string) => root.lookupType(`containerd.services.content.v1.${name}`);
const encode = (name: string, obj: object) =>
  Buffer.from(type(name).encode(type(name).fromObject(obj)).finish());
const toObject = (name: string, buf: Buffer) =>
  type(name).toObject(type(name).decode(buf), {
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
    objects: true,
  });

const digest = `sha256:${'ab'.repeat(32)}`;

test('requests BuildKit sends, as protobufjs encodes them', () => {
  assert.deepEqual(decodeDigestRequest(encode('InfoRequest', { digest })), { digest });
  assert.deepEqual(decodeDigestRequest(encode('DeleteContentRequest', { digest })), { digest });
  assert.deepEqual(decodeRefRequest(encode('StatusRequest', { ref: 'w-1' })), { ref: 'w-1' });
  assert.deepEqual(decodeRefRequest(encode('AbortRequest', { ref: 'w-2' })), { ref: 'w-2' });
  assert.deepEqual(
    decodeUpdateRequest(
      encode('UpdateRequest', {
        info: { digest, size: 5, labels: { a: 'b' } },
        update_mask: { paths: ['labels.a'] },
      }),
    ),
    { info: { digest, size: 5, labels: { a: 'b' } } },
  );
  assert.deepEqual(
    decodeReadContentRequest(encode('ReadContentRequest', { digest, offset: 2 ** 33, size: 7 })),
    { digest, offset: 2 ** 33, size: 7 },
  );
  for (const action of ['STAT', 'WRITE', 'COMMIT'] as const) {
    const req = { action, ref: 'r', total: 2 ** 34, expected: digest, offset: 9, data: Buffer.from('bytes') };
    assert.deepEqual(
      decodeWriteContentRequest(encode('WriteContentRequest', { ...req, labels: { x: 'y' } })),
      req,
    );
  }
  assert.throws(() => decodeWriteContentRequest(Buffer.from([0x08, 0x07])), /unknown write action 7/);
});

test('answers this side sends, as protobufjs reads them', () => {
  assert.deepEqual(
    toObject('InfoResponse', encodeInfoResponse({ info: { digest, size: 2 ** 40, labels: {} } })),
    {
      info: { digest, size: 2 ** 40, labels: {}, created_at: null, updated_at: null },
    },
  );
  assert.deepEqual(toObject('ListStatusesResponse', encodeEmpty()), { statuses: [] });
  const data = Buffer.alloc(70_000, 3);
  assert.deepEqual(toObject('ReadContentResponse', encodeReadContentResponse({ offset: 2 ** 35, data })), {
    offset: 2 ** 35,
    data,
  });
  const write = { action: 'COMMIT' as const, offset: 10, total: 10, digest };
  assert.deepEqual(toObject('WriteContentResponse', encodeWriteContentResponse(write)), {
    ...write,
    started_at: null,
    updated_at: null,
  });
  assert.deepEqual(
    toObject('WriteContentResponse', encodeWriteContentResponse({ ...write, action: 'STAT', offset: 0 })),
    { ...write, action: 'STAT', offset: 0, started_at: null, updated_at: null },
  );
});
