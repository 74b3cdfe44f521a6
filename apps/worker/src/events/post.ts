/**
 * One delivery attempt: POST the event body, signed, to the endpoint. Redirects are never
 * followed (a 3xx is a failed attempt: the signed request must reach the URL the project
 * registered, not wherever that server points), and the whole exchange, look-up included, has a
 * deadline. The connection goes to the one address pinAddress checked; TLS SNI and Host stay the
 * URL's name. Nothing of the answer but its status is kept: a receiver's body is not Kiln's to
 * store or show.
 */
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { EVENT_ID_HEADER, type Network, SIGNATURE_HEADER, signKilnEvent } from '@kiln/core';
import { pinAddress, RefusedAddressError, type Resolve, type ResolvedAddress } from './pin-address.js';

export interface PostRequest {
  url: string;
  body: string;
  secret: string;
  deliveryId: string;
  timeoutMs: number;
  /** Special-purpose networks the operator lets receivers be in (KILN_EVENT_ALLOWED_NETWORKS). */
  allowedNetworks: readonly Network[];
  /** Name resolution; the system's by default (tests inject theirs). */
  resolve?: Resolve;
}

export interface PostOutcome {
  /** The receiver's HTTP status; absent when it gave none (refused, reset, timed out). */
  statusCode?: number;
  /** Why the attempt failed: no answer, a refused address, or a non-2xx status and its standard reason. */
  error?: string;
  ok: boolean;
  /** The receiver's address is refused: no request was made, and retrying would not change that. */
  refused?: boolean;
}

export async function postEvent(r: PostRequest): Promise<PostOutcome> {
  const signal = AbortSignal.timeout(r.timeoutMs);
  try {
    const url = new URL(r.url);
    const pinned = await untilAborted(pinAddress(url.hostname, r.allowedNetworks, r.resolve), signal);
    const status = await send(url, pinned, r, signal);
    if (status >= 200 && status < 300) return { ok: true, statusCode: status };
    const where = status >= 300 && status < 400 ? ' (redirects are not followed)' : '';
    const reason = http.STATUS_CODES[status] ?? '';
    return { ok: false, statusCode: status, error: `HTTP ${status}${reason && ` ${reason}`}${where}` };
  } catch (err) {
    if (err instanceof RefusedAddressError) return { ok: false, refused: true, error: err.message };
    return { ok: false, error: describe(err, signal, r.timeoutMs) };
  }
}

/** POSTs to the pinned address and resolves with the status; the answer's body is never read. */
function send(url: URL, pinned: ResolvedAddress, r: PostRequest, signal: AbortSignal): Promise<number> {
  const lookup: LookupFunction = (_host, options, callback) => {
    if (options.all) callback(null, [pinned]);
    else callback(null, pinned.address, pinned.family);
  };
  const request = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        signal,
        lookup,
        // A fresh connection each time: a pooled one could lead to an address checked for another delivery.
        agent: false,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(r.body),
          'user-agent': 'Kiln-Events/1',
          [SIGNATURE_HEADER]: signKilnEvent(r.secret, r.body),
          [EVENT_ID_HEADER]: r.deliveryId,
        },
      },
      (res) => {
        resolve(res.statusCode ?? 0);
        res.destroy();
      },
    );
    req.on('error', reject);
    req.end(r.body);
  });
}

/** `promise`, or the signal's reason once it aborts (dns.lookup itself cannot be cancelled). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function describe(err: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (signal.aborted) return `no answer within ${timeoutMs / 1000} s (KILN_EVENT_TIMEOUT_SECONDS)`;
  return err instanceof Error ? err.message : String(err);
}
