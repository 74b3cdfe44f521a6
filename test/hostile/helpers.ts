// Helpers for the hostile-input suites: an in-process API (no worker, so nothing ever builds) on
// real PostgreSQL/Redis with local storage, a raw node:http client that keeps exact control over
// what is sent (and survives a server that answers early and closes), hand-made multipart bodies,
// and snapshots of "what the service holds" (queue, Build rows, temp files) to compare around a request.
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { hashToken, loadConfig, QUEUE_BUILDS } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { ApiDeps } from '../../apps/api/src/deps.js';
import {
  bootstrapProject,
  buildApp,
  createApiDeps,
  TOKEN_REVOKED_CHANNEL,
} from '../../apps/api/src/index.js';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testRedisUrl,
} from '../../packages/core/test-support/services.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export interface TestApi {
  base: string;
  port: number;
  dataDir: string;
  tmpDir: string;
  app: FastifyInstance;
  deps: ApiDeps & { close(): Promise<void> };
  db: TestDatabase;
  /** A separate connection for the test's own look at Redis. */
  redis: Redis;
  /** Token of project "alpha" (the caller) and of project "beta" (someone else). */
  token: string;
  otherToken: string;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Environment overrides on top of the test defaults (read through loadConfig, as main.ts does). */
  env?: Record<string, string>;
  /** Called with the deps before the app is built (e.g. to redirect the logger's destination). */
  beforeBuild?: (deps: ApiDeps) => void;
}

/** The API in this process, listening on a loopback port, with its own database and Redis db. */
export async function startApi(opts: StartOptions = {}): Promise<TestApi> {
  const db = await createTestDatabase();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-hostile-'));
  const redisUrl = testRedisUrl();
  const redis = new Redis(redisUrl);
  await redis.flushdb();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = loadConfig({
    KILN_PORT: String(port),
    KILN_HOST: '127.0.0.1',
    KILN_PUBLIC_URL: base,
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    KILN_DATA_DIR: dataDir,
    KILN_SIGNING_KEY: 'h'.repeat(40),
    KILN_LOG_LEVEL: 'silent',
    ...opts.env,
  });
  const deps = await createApiDeps(config);
  opts.beforeBuild?.(deps);
  const app = await buildApp(deps);
  await app.listen({ port, host: '127.0.0.1' });
  const token = await bootstrapProject(db.url, 'alpha');
  const otherToken = await bootstrapProject(db.url, 'beta');
  return {
    base,
    port,
    dataDir,
    tmpDir: path.join(dataDir, 'tmp'),
    app,
    deps,
    db,
    redis,
    token,
    otherToken,
    async close() {
      await app.close();
      await deps.close();
      redis.disconnect();
      await db.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Revokes a token as another API replica would: marks the row and announces it on
 * TOKEN_REVOKED_CHANNEL. Resolves once this API refuses the token (it may have it cached).
 */
export async function revokeToken(api: TestApi, token: string): Promise<void> {
  const row = await api.deps.db.apiToken.findUnique({ where: { tokenHash: hashToken(token) } });
  if (!row) throw new Error('token to revoke not found');
  await api.deps.db.apiToken.update({ where: { id: row.id }, data: { revokedAt: new Date() } });
  await api.redis.publish(TOKEN_REVOKED_CHANNEL, row.id);
  for (let i = 0; ; i++) {
    const r = await request(api.base, '/v1/builds', { headers: { authorization: `Bearer ${token}` } });
    if (r.status === 401) return;
    if (i === 100) throw new Error(`the API still accepts the revoked token (${r.status})`);
    await delay(20);
  }
}

// ---------------------------------------------------------------------------------------------
// What the service holds

export interface Holdings {
  /** Jobs waiting to run: BullMQ's wait list and prioritized set (every build job has a priority). */
  wait: number;
  /** Jobs in any state, as BullMQ counts them. */
  jobs: number;
  /** Build rows, all projects. */
  builds: number;
}

export async function holdings(api: TestApi): Promise<Holdings> {
  const [wait, prioritized, counts, builds] = await Promise.all([
    api.redis.llen(`bull:${QUEUE_BUILDS}:wait`),
    api.redis.zcard(`bull:${QUEUE_BUILDS}:prioritized`),
    api.deps.queue.getJobCounts(
      'waiting',
      'active',
      'delayed',
      'prioritized',
      'waiting-children',
      'completed',
      'failed',
    ),
    api.deps.db.build.count(),
  ]);
  return { wait: wait + prioritized, jobs: Object.values(counts).reduce((a, b) => a + b, 0), builds };
}

/** Files in `<KILN_DATA_DIR>/tmp` (none when the directory does not exist yet). */
export async function tmpFiles(api: TestApi): Promise<string[]> {
  return fs.readdir(api.tmpDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
}

export interface TmpState {
  /** Temp files with content: an upload's copy that was not removed. */
  leftovers: string[];
  /** Empty temp files: see `settledTmpFiles`. */
  empty: string[];
}

/**
 * Temp files once things settled. A successful upload's temp copy is removed right after the answer
 * is written, so this waits (up to `withinMs`) for files with content to go. Empty files are reported
 * apart: upload.ts can leave a 0-byte file behind when validation fails before the temp file's
 * asynchronous open completed (the open/rm race documented in uploads.test.ts); once every request
 * was answered, no upload is in flight, so an empty file that is still there is that leak.
 */
export async function settledTmpFiles(api: TestApi, withinMs = 1500): Promise<TmpState> {
  const end = Date.now() + withinMs;
  for (;;) {
    const state: TmpState = { leftovers: [], empty: [] };
    for (const f of await tmpFiles(api)) {
      const size = await fs
        .stat(path.join(api.tmpDir, f))
        .then((st) => st.size)
        .catch(() => -1);
      if (size > 0) state.leftovers.push(f);
      else if (size === 0) state.empty.push(f);
    }
    if (state.leftovers.length === 0 || Date.now() > end) return state;
    await delay(50);
  }
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 5000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(25);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The parsed body when it is JSON, else undefined. */
  json: unknown;
  /** Milliseconds from the first byte sent to the end of the answer. */
  ms: number;
  /** How many body bytes were written before the answer arrived (or all of them). */
  bodyBytesSent: number;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: Buffer;
  /** Body write size; the writer stops as soon as the server answers. */
  chunkSize?: number;
  /** Send the body with Transfer-Encoding: chunked instead of Content-Length. */
  chunked?: boolean;
  timeoutMs?: number;
}

/**
 * One request on its own connection. Resolves with the answer even when the server answers before
 * the body was sent in full and then closes (EPIPE/ECONNRESET while still writing are expected then).
 */
export function request(base: string, pathAndQuery: string, opts: RequestOptions = {}): Promise<RawResponse> {
  const url = new URL(pathAndQuery, base);
  const body = opts.body;
  const headers: Record<string, string | string[]> = { ...opts.headers };
  if (body && !opts.chunked && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length'))
    headers['content-length'] = String(body.length);
  const started = Date.now();
  return new Promise<RawResponse>((resolve, reject) => {
    let answered = false;
    let sent = 0;
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: opts.method ?? (body ? 'POST' : 'GET'),
        headers,
        agent: false,
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => undefined);
        const done = () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json,
            ms: Date.now() - started,
            bodyBytesSent: sent,
          });
        };
        res.on('end', done);
        // A connection closed right after the answer may cut the 'end'; what arrived is the answer.
        res.on('close', () => {
          if (!res.complete) done();
        });
      },
    );
    req.setTimeout(opts.timeoutMs ?? 20_000, () => req.destroy(new Error('request timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (answered) return;
      // The server may answer early and reset the connection while we are still writing; the
      // answer can still be on its way, so wait a moment for it before giving up.
      setTimeout(() => {
        if (!answered) reject(err);
      }, 200);
    });
    if (!body) {
      req.end();
      return;
    }
    const size = opts.chunkSize ?? 64 * KiB;
    const pump = () => {
      while (sent < body.length) {
        if (answered || req.destroyed) return;
        const piece = body.subarray(sent, sent + size);
        sent += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/**
 * Bytes written verbatim on a fresh connection (or whatever `talk` writes on it); resolves with
 * everything the server sent until it closed.
 */
export function rawExchange(
  port: number,
  bytes: Buffer | ((socket: net.Socket) => void),
  timeoutMs = 5000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () =>
      typeof bytes === 'function' ? bytes(socket) : socket.write(bytes),
    );
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(
        new Error(
          `no close within ${timeoutMs} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`,
        ),
      );
    });
  });
}

export interface Part {
  name: string;
  /** A file part when set. */
  filename?: string;
  contentType?: string;
  value: string | Buffer;
}

/** A multipart/form-data body, parts in the given order. */
export function multipart(parts: Part[]): { body: Buffer; contentType: string } {
  const boundary = `----kiln-hostile-${Math.random().toString(16).slice(2)}`;
  const pieces: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType) head += `Content-Type: ${p.contentType}\r\n`;
    else if (p.filename !== undefined) head += 'Content-Type: application/octet-stream\r\n';
    pieces.push(Buffer.from(`${head}\r\n`), Buffer.from(p.value), Buffer.from('\r\n'));
  }
  pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(pieces), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** `{error: {code, message}}` of an answer, or undefined when it does not have that shape. */
export function errorOf(res: RawResponse): { code: string; message: string } | undefined {
  const e = (res.json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string')
    return { code: e.code, message: e.message };
  return undefined;
}
