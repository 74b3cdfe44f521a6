/**
 * An in-process S3 server for tests: s3rver 3.7 on 127.0.0.1, a fresh temp directory per instance.
 *
 * s3rver implements multipart upload (Create/UploadPart/Complete) but not AbortMultipartUpload
 * (it answers MethodNotAllowed), ListMultipartUploads or ListParts (NotImplemented /
 * MethodNotAllowed). With `multipartShims` (the default) those three calls are answered from
 * s3rver's own on-disk state (`<dir>/<bucket>/._S3rver_uploads/<uploadId>/`), following the S3 API
 * docs, so code that aborts and verifies multipart uploads can be tested. Pass
 * `multipartShims: false` for s3rver as published.
 *
 * s3rver checks presigned URLs' expiry (X-Amz-Date + X-Amz-Expires) and that the access key is
 * S3RVER, but not SigV4 signatures.
 *
 * A PUT's object appears only once its body has arrived whole, as on S3 (`atomicPuts`).
 */

import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void> | void;
/** What s3rver 3.7's FilesystemStore is given to store, and the two of its methods used here. */
interface StoredObject {
  bucket: string;
  key: string;
  content: Readable | Buffer;
  metadata: Record<string, string>;
}
interface FilesystemStore {
  rootDirectory: string;
  getResourcePath(bucket: string, key: string, resource: 'object'): string;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
  putObject(object: StoredObject): Promise<{ size: number; md5: string }>;
}
interface S3rverInstance {
  middleware: Middleware[];
  store: FilesystemStore;
  httpServer?: Server;
  run(): Promise<{ port: number; address: string }>;
  close(): Promise<void>;
}
type S3rverCtor = new (opts: Record<string, unknown>) => S3rverInstance;

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;

export interface StartedS3rver {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** s3rver's data directory (removed by stop()). */
  directory: string;
  /** Where s3rver keeps in-progress multipart uploads of `bucket`, one directory per upload id. */
  uploadsDir: string;
  stop(): Promise<void>;
}

export async function startS3rver(
  opts: { bucket?: string; multipartShims?: boolean } = {},
): Promise<StartedS3rver> {
  const bucket = opts.bucket ?? 'kiln';
  const directory = await mkdtemp(path.join(tmpdir(), 'kiln-s3rver-'));
  const uploadsDir = path.join(directory, bucket, '._S3rver_uploads');
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    directory,
    silent: true,
    configureBuckets: [{ name: bucket }],
  });
  atomicPuts(server.store);
  if (opts.multipartShims ?? true) server.middleware.unshift(multipartShims(directory));
  let info: { port: number; address: string };
  try {
    info = await server.run();
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${info.port}`,
    bucket,
    region: 'us-east-1',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    directory,
    uploadsDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      server.httpServer?.closeAllConnections();
      await server.close().catch(() => undefined);
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * s3rver streams a PUT's body straight into the object's file, which every listing, HEAD and GET
 * then shows, partial, and keeps for good when the client goes away mid-body (its handler never
 * returns). BuildKit's S3 cache exporter does that whenever one blob fails: it cancels the
 * uploads still running. Here the body goes to a file of its own and is renamed into place once
 * whole; a body cut short leaves nothing, as on S3.
 */
function atomicPuts(store: FilesystemStore): void {
  store.putObject = async (object) => {
    const partials = path.join(store.rootDirectory, object.bucket, '._kiln_partial');
    await mkdir(partials, { recursive: true });
    const partial = path.join(partials, randomUUID());
    const md5 = createHash('md5');
    let size = 0;
    const count = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        md5.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    const body = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
    try {
      await pipeline(body, count, createWriteStream(partial));
      const target = store.getResourcePath(object.bucket, object.key, 'object');
      await mkdir(path.dirname(target), { recursive: true });
      await rename(partial, target);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    const digest = md5.digest('hex');
    await store.putMetadata(object.bucket, object.key, object.metadata, digest);
    return { size, md5: digest };
  };
}

/** AbortMultipartUpload, ListMultipartUploads and ListParts over s3rver's upload directories. */
function multipartShims(directory: string): Middleware {
  return async (ctx, next) => {
    const segments = ctx.path.split('/').slice(1).map(decodeURIComponent);
    const bucket = segments[0];
    const key = segments.slice(1).join('/');
    if (!bucket) return next();
    const uploads = path.join(directory, bucket, '._S3rver_uploads');
    const uploadId = typeof ctx.query.uploadId === 'string' ? ctx.query.uploadId : undefined;

    if (ctx.method === 'GET' && key === '' && 'uploads' in ctx.query) {
      const prefix = typeof ctx.query.prefix === 'string' ? ctx.query.prefix : '';
      const ids = await readdir(uploads).catch(() => [] as string[]);
      const entries: string[] = [];
      for (const id of ids.sort()) {
        const upload = await readUpload(uploads, id);
        if (!upload?.key.startsWith(prefix)) continue;
        entries.push(
          `<Upload><Key>${xml(upload.key)}</Key><UploadId>${xml(id)}</UploadId>` +
            `<Initiated>${upload.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
        );
      }
      return send(
        ctx,
        200,
        `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xml(bucket)}</Bucket>` +
          `<Prefix>${xml(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>${entries.join('')}</ListMultipartUploadsResult>`,
      );
    }

    if (key !== '' && uploadId !== undefined && (ctx.method === 'DELETE' || ctx.method === 'GET')) {
      const upload = /^[0-9a-f]{1,64}$/.test(uploadId) ? await readUpload(uploads, uploadId) : undefined;
      if (!upload || upload.key !== key) {
        return send(
          ctx,
          404,
          `<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message><UploadId>${xml(uploadId)}</UploadId></Error>`,
        );
      }
      if (ctx.method === 'DELETE') {
        await rm(path.join(uploads, uploadId), { recursive: true, force: true });
        ctx.status = 204;
        ctx.body = null;
        return;
      }
      const names = await readdir(path.join(uploads, uploadId));
      const parts: string[] = [];
      for (const n of names.filter((x) => /^\d+$/.test(x)).sort((a, b) => Number(a) - Number(b))) {
        const file = path.join(uploads, uploadId, n);
        const [st, md5] = await Promise.all([stat(file), readFile(`${file}.md5`, 'utf8').catch(() => '')]);
        parts.push(
          `<Part><PartNumber>${n}</PartNumber><LastModified>${st.mtime.toISOString()}</LastModified>` +
            `<ETag>"${xml(md5)}"</ETag><Size>${st.size}</Size></Part>`,
        );
      }
      return send(
        ctx,
        200,
        `<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xml(bucket)}</Bucket><Key>${xml(key)}</Key>` +
          `<UploadId>${xml(uploadId)}</UploadId><IsTruncated>false</IsTruncated>${parts.join('')}</ListPartsResult>`,
      );
    }
    return next();
  };
}

async function readUpload(
  uploads: string,
  id: string,
): Promise<{ key: string; initiated: Date } | undefined> {
  try {
    const dir = path.join(uploads, id);
    const [key, st] = await Promise.all([readFile(path.join(dir, 'key'), 'utf8'), stat(dir)]);
    return { key, initiated: st.birthtime.getTime() ? st.birthtime : st.mtime };
  } catch {
    return undefined;
  }
}

function send(ctx: KoaContext, status: number, body: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
}

function xml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
