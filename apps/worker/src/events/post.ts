/**
 * One delivery attempt: POST the event body, signed, to the endpoint. Redirects are never
 * followed (a 3xx is a failed attempt: the signed request must reach the URL the project
 * registered, not wherever that server points), and the whole exchange has a deadline.
 */
import { EVENT_ID_HEADER, SIGNATURE_HEADER, signKilnEvent } from '@kiln/core';

export interface PostOutcome {
  /** The receiver's HTTP status; absent when it gave none (refused, reset, timed out). */
  statusCode?: number;
  /** Why the attempt failed: no answer, or a short excerpt of a non-2xx answer. */
  error?: string;
  ok: boolean;
}

/** What is kept of a failed answer's body in the delivery log. */
const EXCERPT_BYTES = 300;

export async function postEvent(
  url: string,
  body: string,
  secret: string,
  deliveryId: string,
  timeoutMs: number,
): Promise<PostOutcome> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(url, {
      method: 'POST',
      body,
      redirect: 'manual',
      signal,
      headers: {
        'content-type': 'application/json',
        'user-agent': 'Kiln-Events/1',
        [SIGNATURE_HEADER]: signKilnEvent(secret, body),
        [EVENT_ID_HEADER]: deliveryId,
      },
    });
    const ok = res.status >= 200 && res.status < 300;
    const excerpt = await readExcerpt(res, ok ? 0 : EXCERPT_BYTES);
    if (ok) return { ok, statusCode: res.status };
    const where = res.status >= 300 && res.status < 400 ? ` (redirects are not followed)` : '';
    return {
      ok,
      statusCode: res.status,
      error: `HTTP ${res.status}${where}${excerpt ? `: ${excerpt}` : ''}`,
    };
  } catch (err) {
    return { ok: false, error: describe(err, signal, timeoutMs) };
  }
}

/** Up to `limit` bytes of the answer as text; the rest is not read (the connection is let go). */
async function readExcerpt(res: Response, limit: number): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // A body cut short tells nothing more than its status.
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8').replace(/\s+/g, ' ').trim();
}

function describe(err: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (signal.aborted) return `no answer within ${timeoutMs / 1000} s (KILN_EVENT_TIMEOUT_SECONDS)`;
  // fetch reports network failures as "fetch failed" with the real reason as the cause.
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message;
  const message = err instanceof Error ? err.message : String(err);
  return detail ? `${message}: ${detail}` : message;
}
