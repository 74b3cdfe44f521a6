/**
 * The session's content store: containerd's `containerd.services.content.v1.Content`, which
 * BuildKit calls for a `type=local` cache export or import (`dest=`/`src=` name the store; calls
 * carry it as `buildkit-attachable-store-id: local:<name>`). The blobs live wherever the caller's
 * ContentStore keeps them (a directory, object storage); this module speaks the protocol: Info,
 * Read (ranges), Write (STAT / WRITE / COMMIT, each answered with the offset reached, the digest
 * checked at commit) and Abort. Listing, status and deletion are not needed by BuildKit's cache
 * and answer empty or UNIMPLEMENTED.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { Metadata } from '../grpc/metadata.js';
import { type StatusCode, status } from '../grpc/status.js';
import {
  decodeDigestRequest,
  decodeReadContentRequest,
  decodeRefRequest,
  decodeUpdateRequest,
  decodeWriteContentRequest,
  encodeInfoResponse,
  encodeReadContentResponse,
  encodeWriteContentResponse,
  type ReadContentRequest,
  type WriteAction,
  type WriteContentRequest,
} from '../wire/content-messages.js';
import { encodeEmpty } from '../wire/protobuf.js';
import type { MethodDefinition, MethodHandler, ServerCall, UnaryCall, UnaryCallback } from './grpc-server.js';
import { writeWithBackpressure } from './stream-io.js';

const STORE_ID_HEADER = 'buildkit-attachable-store-id';
/** Size of the chunks a Read answers with (containerd's own copy buffer is 1 MiB). */
const READ_CHUNK = 1024 * 1024;

/** Where a session's content store keeps blobs; digests are `sha256:<hex>`. */
export interface ContentStore {
  /** The blob's size, or undefined when the store does not hold it. */
  info(digest: string): Promise<{ size: number } | undefined>;
  /** The blob's bytes from `offset`, `length` of them (undefined: to the end). */
  read(digest: string, offset: number, length: number | undefined): Promise<Readable>;
  /**
   * Starts storing a blob that should have this digest and size. Bytes go into `sink`; the
   * session ends it once the digest checked out, and `stored` settles when the blob is kept.
   * Destroying the sink (a failed or abandoned write) must leave nothing behind. A rejection
   * with a gRPC `code` and `details` (e.g. RESOURCE_EXHAUSTED from a full store) reaches
   * BuildKit as that status.
   */
  write(expected: string, total: number): Promise<{ sink: Writable; stored: Promise<void> }>;
}

const SERVICE = '/containerd.services.content.v1.Content/';
const ignoreRequest = (): undefined => undefined;

function contentMethod<Req, Res>(
  name: string,
  streams: 'unary' | 'server' | 'both',
  requestDeserialize: (bytes: Buffer) => Req,
  responseSerialize: (message: Res) => Buffer,
): MethodDefinition<unknown, unknown> {
  return {
    path: `${SERVICE}${name}`,
    requestStream: streams === 'both',
    responseStream: streams !== 'unary',
    requestDeserialize,
    responseSerialize: responseSerialize as (message: unknown) => Buffer,
  };
}

/** The Content service's methods by name, with their codecs (wire/content-messages.ts). */
export const CONTENT_METHODS: Readonly<Record<string, MethodDefinition<unknown, unknown>>> = {
  Info: contentMethod('Info', 'unary', decodeDigestRequest, encodeInfoResponse),
  Update: contentMethod('Update', 'unary', decodeUpdateRequest, encodeInfoResponse),
  List: contentMethod('List', 'server', ignoreRequest, encodeEmpty),
  Delete: contentMethod('Delete', 'unary', ignoreRequest, encodeEmpty),
  Read: contentMethod('Read', 'server', decodeReadContentRequest, encodeReadContentResponse),
  Status: contentMethod('Status', 'unary', decodeRefRequest, encodeEmpty),
  ListStatuses: contentMethod('ListStatuses', 'unary', ignoreRequest, encodeEmpty),
  Write: contentMethod('Write', 'both', decodeWriteContentRequest, encodeWriteContentResponse),
  Abort: contentMethod('Abort', 'unary', ignoreRequest, encodeEmpty),
};

const failure = (code: StatusCode, details: string) => Object.assign(new Error(details), { code, details });

const DIGEST = /^sha256:[0-9a-f]{64}$/;
/**
 * Every digest the daemon names, checked before a store sees it: stores may build paths or keys
 * from it (`sha256:../../x` would be a path out of a directory store).
 */
function checkedDigest(digest: string): string {
  if (!DIGEST.test(digest))
    throw failure(status.INVALID_ARGUMENT, `not a sha256 digest: "${digest.slice(0, 100)}"`);
  return digest;
}
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Handlers of the Content service over the stores a solve offers, by id (`local:<name>`). */
export function contentHandlers(stores: ReadonlyMap<string, ContentStore>): Record<string, MethodHandler> {
  const choose = (md: Metadata): ContentStore => {
    const id = String(md.get(STORE_ID_HEADER)[0] ?? '');
    const store = stores.get(id);
    if (!store) throw failure(status.NOT_FOUND, `unknown content store "${id}"`);
    return store;
  };
  const unary =
    <Req, Res>(fn: (store: ContentStore, req: Req) => Promise<Res>) =>
    (call: UnaryCall<Req>, cb: UnaryCallback<Res>) => {
      Promise.resolve()
        .then(() => fn(choose(call.metadata), call.request))
        .then(
          (res) => cb(null, res),
          (err: { code?: number; details?: string }) =>
            cb({ code: err.code ?? status.UNAVAILABLE, details: err.details ?? messageOf(err) }),
        );
    };
  const infoOf = async (store: ContentStore, digest: string) => {
    const found = await store.info(checkedDigest(digest));
    if (!found) throw failure(status.NOT_FOUND, `content ${digest}: not found`);
    return { digest, size: found.size, labels: {} };
  };

  return {
    Info: unary(async (store, req: { digest: string }) => ({ info: await infoOf(store, req.digest) })),
    // BuildKit may label blobs; this store keeps no labels, and says what it holds.
    Update: unary(async (store, req: { info: { digest: string } }) => ({
      info: await infoOf(store, req.info.digest),
    })),
    Abort: unary(async () => ({})),
    Delete: unary(async () => ({})),
    Status: unary(async (_store, req: { ref: string }) => {
      throw failure(status.NOT_FOUND, `no write in progress for ${req.ref}`);
    }),
    ListStatuses: unary(async () => ({ statuses: [] })),
    List: (call: ServerCall<unknown, unknown>) => call.end(),
    Read: (call: ServerCall<ReadContentRequest, unknown>) => {
      void read(call).catch((err: { code?: number; details?: string }) => {
        call.fail(err.code ?? status.UNAVAILABLE, err.details ?? messageOf(err));
      });
    },
    Write: (call: ServerCall<WriteContentRequest, unknown>) => {
      void write(call).catch((err: { code?: number; details?: string }) => {
        call.fail(err.code ?? status.UNAVAILABLE, err.details ?? messageOf(err));
      });
    },
  };

  async function read(call: ServerCall<ReadContentRequest, unknown>) {
    const store = choose(call.metadata);
    const { digest } = call.request;
    const { size: total } = await infoOf(store, digest);
    // containerd's rules: the offset is clamped, a size of 0 (or past the end) reads to the end.
    const offset = Math.min(Math.max(call.request.offset, 0), total);
    const length =
      call.request.size <= 0 || offset + call.request.size > total ? total - offset : call.request.size;
    let at = offset;
    if (length > 0) {
      const body = await store.read(digest, offset, length);
      for await (const chunk of body as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length; i += READ_CHUNK) {
          const data = chunk.subarray(i, i + READ_CHUNK);
          // Rejects when the call is gone (BuildKit canceled it): a 'drain' would never come.
          await writeWithBackpressure(call, { offset: at, data });
          at += data.length;
        }
      }
    }
    call.end();
  }

  /**
   * One blob per stream, as containerd's remote writer sends it: STAT opens it (refused with
   * ALREADY_EXISTS when the store holds the digest: the writer then skips it), WRITEs append at
   * the offset reached, COMMIT checks size and digest and waits until the store kept it.
   */
  async function write(call: ServerCall<WriteContentRequest, unknown>) {
    const store = choose(call.metadata);
    let open:
      | { sink: Writable; stored: Promise<void>; hash: Hash; offset: number; total: number; expected: string }
      | undefined;
    let committed = false;
    const reply = (action: WriteAction) =>
      call.write({
        action,
        offset: open?.offset ?? 0,
        total: open?.total ?? 0,
        digest: open ? `sha256:${open.hash.copy().digest('hex')}` : '',
      });
    call.on('close', () => {
      if (open && !committed) open.sink.destroy(new Error('the write was abandoned before its commit'));
    });
    // Not `for await`: leaving such a loop by an exception destroys the stream, and then no
    // status reaches BuildKit, which waits forever (as it did for an existing blob's ALREADY_EXISTS).
    const requests = (call as AsyncIterable<WriteContentRequest>)[Symbol.asyncIterator]();
    for (;;) {
      const next = await requests.next();
      if (next.done) break;
      const req = next.value;
      // Into a sink that is already ended, nothing could be written, nor answered.
      if (committed) throw failure(status.FAILED_PRECONDITION, 'a write request after the commit');
      if (!open) {
        // The blob's name is fixed here: one stored under a digest its bytes do not have would
        // poison every later import of it.
        if (await store.info(checkedDigest(req.expected))) {
          throw failure(status.ALREADY_EXISTS, `content ${req.expected}: already exists`);
        }
        const { sink, stored } = await store.write(req.expected, req.total);
        stored.catch(() => undefined);
        open = {
          sink,
          stored,
          hash: createHash('sha256'),
          offset: 0,
          total: req.total,
          expected: req.expected,
        };
      }
      if (req.action === 'STAT') {
        reply('STAT');
        continue;
      }
      if (req.offset > 0 && req.offset !== open.offset) {
        throw failure(
          status.OUT_OF_RANGE,
          `write @${req.offset} must occur at the current offset ${open.offset}`,
        );
      }
      if (req.data.length > 0) {
        open.hash.update(req.data);
        open.offset += req.data.length;
        // Rejects, so the call fails with a status, when the sink fails or is gone.
        await writeWithBackpressure(open.sink, req.data);
      }
      if (req.action === 'COMMIT') {
        const size = req.total || open.total;
        if (req.expected && req.expected !== open.expected) {
          throw failure(
            status.FAILED_PRECONDITION,
            `commit of ${req.expected} on a write opened for ${open.expected}`,
          );
        }
        const { expected } = open;
        const digest = `sha256:${open.hash.copy().digest('hex')}`;
        if ((size > 0 && size !== open.offset) || expected !== digest) {
          throw failure(
            status.FAILED_PRECONDITION,
            `commit of ${expected}: got ${open.offset} bytes with digest ${digest}, expected ${size} bytes`,
          );
        }
        open.sink.end();
        await open.stored;
        committed = true;
      }
      reply(req.action);
    }
    call.end();
  }
}
