import fs from 'node:fs/promises';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BUILD_STATUSES, FINAL_STATUSES } from '@kiln/contract';
import { AppError } from '@kiln/core';
import type { FastifyReply } from 'fastify';
import { Type } from 'typebox';

/** The dashboard's files (apps/api/ui, two levels above this module in src/ and in dist/ alike). */
const UI_DIR = new URL('../../ui/', import.meta.url);

/**
 * The contract's constants the dashboard uses, as the ES module `contract.js`: made from
 * @kiln/contract when the API starts, so the pages never carry a copy of their own.
 */
export function contractModule(): string {
  const constants = { BUILD_STATUSES, FINAL_STATUSES: [...FINAL_STATUSES] };
  return Object.entries(constants)
    .map(([name, value]) => `export const ${name} = Object.freeze(${JSON.stringify(value)});\n`)
    .join('');
}

/** Every file the dashboard has; nothing else under /ui/ is served, so no path can reach further. */
const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'dom.js': 'text/javascript; charset=utf-8',
  'views.js': 'text/javascript; charset=utf-8',
  'charts.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/**
 * Scripts and styles from this origin only, no inline code, no plugins or frames: build logs and
 * error messages are the caller's text, and the token lives in the page's session storage.
 * connect-src 'self': the dashboard talks to this API only (downloads are navigations).
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** The dashboard under /ui/ (GET / leads there). Its files are read once, at start-up. */
export async function uiRoutes(): Promise<FastifyPluginAsyncTypebox> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [name, type] of Object.entries(FILES)) {
    files.set(name, { body: await fs.readFile(new URL(name, UI_DIR)), type });
  }
  files.set('contract.js', { body: Buffer.from(contractModule()), type: 'text/javascript; charset=utf-8' });
  const send = (reply: FastifyReply, name: string) => {
    const file = files.get(name);
    if (!file) throw new AppError('not_found', 'no such file in the dashboard');
    return reply
      .type(file.type)
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(file.body);
  };

  return async (app) => {
    const hide = { schema: { hide: true } };
    app.get('/', hide, (_req, reply) => reply.redirect('/ui/', 302));
    app.get('/ui', hide, (_req, reply) => reply.redirect('/ui/', 302));
    app.get('/ui/', hide, (_req, reply) => send(reply, 'index.html'));
    // A Map lookup: a name outside the list ("..%2F", "constructor") is simply not there.
    const fileParams = { schema: { hide: true, params: Type.Object({ file: Type.String() }) } };
    app.get('/ui/:file', fileParams, (req, reply) => send(reply, req.params.file));
  };
}
