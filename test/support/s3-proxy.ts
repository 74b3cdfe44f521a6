// An HTTP proxy in front of s3rver, for the worker only: the fault tests watch (and may fail) the
// S3 requests a worker sends, while the API keeps talking to s3rver directly.
import http from 'node:http';
import { addCleanup, once } from './processes.js';

/** One S3 request as the proxy sees it (path style: /bucket/key?query). */
export interface S3Call {
  method: string;
  url: URL;
  /** The object key, without the bucket. */
  key: string;
  /** UploadPart: its part number; otherwise null. */
  part: number | null;
}

export interface S3ProxyHooks {
  /** Sees every request first; returns true when it answered the request itself (nothing is forwarded). */
  intercept?: (call: S3Call, req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  /** A forwarded request was answered by s3rver: its status and how many body bytes were sent. */
  answered?: (call: S3Call, status: number, bytes: number) => void;
}

/** Starts the proxy in front of `s3Endpoint`; `close` is also registered as an after() cleanup. */
export async function startS3Proxy(
  s3Endpoint: string,
  hooks: S3ProxyHooks = {},
): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const target = new URL(s3Endpoint);
  const proxy = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const partNumber = url.searchParams.get('partNumber');
    const call: S3Call = {
      method: req.method ?? '',
      url,
      key: decodeURIComponent(url.pathname.split('/').slice(2).join('/')),
      part:
        req.method === 'PUT' && partNumber !== null && url.searchParams.has('uploadId')
          ? Number(partNumber)
          : null,
    };
    if (hooks.intercept?.(call, req, res)) return;
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    const headers = { ...req.headers };
    delete headers.expect;
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (upRes) => {
        hooks.answered?.(call, upRes.statusCode ?? 0, bytes);
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', (err) => res.destroy(err));
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const close = once(
    () =>
      new Promise<void>((r) => {
        proxy.closeAllConnections();
        proxy.close(() => r());
      }),
  );
  addCleanup(close);
  return { endpoint: `http://127.0.0.1:${(proxy.address() as { port: number }).port}`, close };
}
