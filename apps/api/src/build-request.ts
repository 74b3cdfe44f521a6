import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AppError,
  type BuildSecrets,
  type BuildSpec,
  contextLimitsOf,
  loadProjectQuotas,
  parseBuildSecrets,
  parseBuildSpec,
  requireSecretsKey,
  SPEC_FIELDS,
  storedBytesLeft,
} from '@kiln/core';
import type { FastifyRequest, RawServerDefault, RouteGenericInterface } from 'fastify';
import { Type } from 'typebox';
import { checkSomeBuilderCanServe } from './builder-capabilities.js';
import { checkIdempotencyKey, contextCutoff, createBuild } from './create-build.js';
import type { ApiDeps } from './deps.js';
import { parseGitBuildRequest } from './git-request.js';
import { mediaType } from './media-type.js';
import { QUERY, SpecFields } from './spec-fields.js';
import { type ReceivedContext, receiveContext, type UploadBudget, uploadTmpDir } from './upload.js';
import type { UploadSlot, UploadSlots } from './upload-slots.js';

/** Content types taken as a raw context upload (the body stays a stream for receiveContext). */
export const RAW_CONTEXT_TYPES = [
  'application/x-tar',
  'application/tar',
  'application/gzip',
  'application/x-gzip',
  'application/octet-stream',
];

/** What POST /v1/builds declares besides its body, which is read here by its content type. */
export const buildRequestSchema = {
  // Spec fields and repeatable build-arg/label: specFromQuery names what is wrong.
  querystring: Type.Record(Type.String(), Type.Unknown()),
  headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String()) }),
};

type BuildRequest = FastifyRequest<
  RouteGenericInterface,
  RawServerDefault,
  IncomingMessage,
  typeof buildRequestSchema,
  TypeBoxTypeProvider
>;

interface Upload {
  spec: BuildSpec;
  secrets: BuildSecrets;
  context: ReceivedContext;
}

/**
 * POST /v1/builds: the build a request asks for, created. A JSON body names a git repository;
 * anything else is an upload (a raw tar or gzip body with the spec in the query, or multipart
 * with the spec's fields before the context part), whose temp copy is gone once this returns.
 */
export async function submitBuild(
  deps: ApiDeps,
  req: BuildRequest,
  uploads: UploadSlots,
  traceparent?: string,
) {
  const idempotencyKey = checkIdempotencyKey(req.headers['idempotency-key']);
  const json = isJsonBody(req) ? withQuerySpec(req) : undefined;
  if (json !== undefined && isStoredContextRequest(json)) {
    const { spec, secrets, context } = await storedContextRequest(deps, req.projectId, json);
    const source = { kind: 'upload', context } as const;
    return createBuild(deps, req.projectId, spec, source, idempotencyKey, secrets, traceparent);
  }
  if (json !== undefined) {
    const { spec, git, secrets } = parseGitBuildRequest(json, deps.config.git);
    const source = { kind: 'git', git, origin: 'api' } as const;
    return createBuild(deps, req.projectId, spec, source, idempotencyKey, secrets, traceparent);
  }
  const slot = await servicesTurn(req, deps, () => uploads.take(req.projectId));
  if (req.raw.socket.destroyed || req.raw.socket.writableEnded) {
    // Node answered it 408 (KILN_REQUEST_TIMEOUT_SECONDS) while it waited: nothing is built.
    slot.release();
    throw new AppError('request_timeout', 'the upload waited for its turn past the request timeout');
  }
  try {
    const { spec, secrets, context } = await receiveUpload(deps, req, slot);
    try {
      const source = { kind: 'upload', context } as const;
      return await servicesTurn(req, deps, () =>
        createBuild(deps, req.projectId, spec, source, idempotencyKey, secrets, traceparent),
      );
    } finally {
      await context.dispose();
    }
  } finally {
    slot.release();
  }
}

/**
 * Runs `wait`, which is the service's (a slot for the upload, storing its context), with the
 * socket's idle timer off: the caller is only waiting for the answer, and Node would cut a
 * connection idle for KILN_CONNECTION_TIMEOUT_SECONDS without one (the build created all the
 * same). A wait for a slot is bounded by KILN_REQUEST_TIMEOUT_SECONDS still (its body is unread:
 * Node answers 408, and the caller checks the socket before reading).
 */
async function servicesTurn<T>(req: BuildRequest, deps: ApiDeps, wait: () => Promise<T>): Promise<T> {
  const socket = req.raw.socket;
  socket.setTimeout(0);
  try {
    return await wait();
  } finally {
    if (!socket.destroyed) socket.setTimeout(deps.config.connectionTimeoutSeconds * 1000);
  }
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

function isStoredContextRequest(body: unknown): body is Record<string, unknown> {
  return typeof body === 'object' && body !== null && !Array.isArray(body) && 'context' in body;
}

/**
 * A JSON body `{"context": "sha256:…", ...spec}`: a build of a context this project uploaded
 * before (the CLI asks this way first and uploads only on a 404), so an unchanged context is
 * not sent again. The project must have built that digest with the same Dockerfile path, and
 * the object must still be stored; another project's contexts answer exactly as unknown ones.
 */
async function storedContextRequest(
  deps: ApiDeps,
  projectId: string,
  body: Record<string, unknown>,
): Promise<Upload> {
  const { context: digest, ...fields } = body;
  if (typeof digest !== 'string' || !DIGEST.test(digest)) {
    throw new AppError('invalid_context', 'context must be a digest like "sha256:<64 hex digits>"');
  }
  const spec = parseBuildSpec(fields);
  const secrets = parseBuildSecrets(fields.secrets);
  const since = contextCutoff(deps);
  const stored = await deps.builds.storedContextOf(projectId, digest, spec.file, since);
  const unknown = () =>
    new AppError('not_found', `this project has no stored context ${digest} with ${spec.file}: upload it`);
  if (!stored) throw unknown();
  const context: ReceivedContext = {
    digest,
    size: Number(stored.contextSize),
    key: stored.contextKey,
    // Called when the object is gone once the build row holds it: retention got there first.
    uploaded: false,
    restore: () => Promise.reject(unknown()),
    dispose: () => Promise.resolve(),
  };
  return { spec, secrets, context };
}

/**
 * The spec and the stored context of an upload. One that stalls for the socket's idle timeout or
 * is still arriving at the request deadline is answered `408 request_timeout`, and the connection
 * closed after the answer; before, either cut the connection without one.
 */
async function receiveUpload(deps: ApiDeps, req: BuildRequest, slot: UploadSlot): Promise<Upload> {
  const { requestTimeoutSeconds, connectionTimeoutSeconds } = deps.config;
  let gaveUp: AppError | undefined;
  let giveUp: (err: AppError) => void = () => undefined;
  const givenUp = new Promise<never>((_, reject) => {
    giveUp = (err) => {
      gaveUp ??= err;
      reject(err);
    };
  });
  // Node checks its own requestTimeout only every 30 s (connectionsCheckingInterval), so a
  // drip-fed upload gets this deadline too. A body that has all arrived is not timed out: what
  // is left (checks, storing) is the service's time, not the caller's.
  const deadline = setTimeout(() => {
    if (!req.raw.complete) {
      giveUp(new AppError('request_timeout', `the upload took longer than ${requestTimeoutSeconds} s`));
    }
  }, requestTimeoutSeconds * 1000);
  // Node tells an unfinished request of its socket's idle timeout (connectionTimeout) first, and
  // cuts the connection only when nobody listens.
  const onIdle = () =>
    giveUp(new AppError('request_timeout', `the upload sent nothing for ${connectionTimeoutSeconds} s`));
  req.raw.on('timeout', onIdle);
  const reading = readUpload(deps, req, slot);
  try {
    return await Promise.race([reading, givenUp]);
  } catch (err) {
    if (gaveUp) {
      // Answered, the connection closes; Node leaves an answered request's unread body open, so
      // end it then: the read fails, and its temp file goes. A context stored meanwhile goes too.
      const reason = gaveUp;
      slot.releaseAfter(reading);
      const socket = req.raw.socket;
      if (socket.destroyed) req.raw.destroy(reason);
      else socket.once('close', () => req.raw.destroy(reason));
      reading.then(
        (upload) =>
          upload.context
            .dispose()
            .catch((e: unknown) => req.log.warn({ err: e }, 'could not remove a timed-out upload')),
        () => undefined,
      );
    }
    throw err;
  } finally {
    clearTimeout(deadline);
    req.raw.off('timeout', onIdle);
  }
}

async function readUpload(deps: ApiDeps, req: BuildRequest, slot: UploadSlot): Promise<Upload> {
  if (!req.isMultipart()) {
    if (!isStream(req.body)) {
      throw new AppError(
        'unsupported_media_type',
        `send the context as ${RAW_CONTEXT_TYPES.slice(0, 3).join(', ')} or multipart/form-data, or name a git repository in JSON`,
      );
    }
    const spec = parseBuildSpec(specFromQuery(req.query).spec);
    await checkSomeBuilderCanServe(deps, spec);
    const options = await uploadOptions(deps, req.projectId, spec.file);
    return { spec, secrets: {}, context: await receiveContext(req.body, { ...options, slot }) };
  }
  const fields = specFromQuery(req.query);
  let stored: Upload | undefined;
  try {
    for await (const part of req.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'context' || stored) {
          part.file.resume();
          throw new AppError(
            'invalid_request',
            `unexpected file part "${part.fieldname}": send one part named "context"`,
          );
        }
        const input = fields.spec;
        const spec = parseBuildSpec(input);
        const secrets = parseBuildSecrets(input.secrets);
        // createBuild refuses them too; here before the context is read.
        if (spec.secrets) requireSecretsKey(deps.config.credentialsKeys);
        await checkSomeBuilderCanServe(deps, spec);
        const options = await uploadOptions(deps, req.projectId, spec.file);
        stored = { spec, secrets, context: await receiveContext(part.file, { ...options, slot }) };
      } else {
        if (stored)
          throw new AppError(
            'invalid_request',
            `field "${part.fieldname}" must come before the context part`,
          );
        if (part.valueTruncated) {
          const code = part.fieldname === 'spec' ? 'invalid_spec' : 'invalid_request';
          throw new AppError(code, `the "${part.fieldname}" field is larger than 1 MiB`);
        }
        if (part.fieldname === 'spec') {
          // A part sent as application/json arrives parsed already.
          const spec = typeof part.value === 'string' ? parseSpecJson(part.value) : part.value;
          if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
            throw new AppError('invalid_spec', 'the "spec" field must be a JSON object');
          }
          fields.addAll(spec as Record<string, unknown>, 'the "spec" part');
        } else fields.add(part.fieldname, part.value, `the form field "${part.fieldname}"`);
      }
    }
  } catch (err) {
    await stored?.context.dispose();
    throw err;
  }
  if (!stored) throw new AppError('invalid_context', 'no "context" file part in the form');
  return stored;
}

async function uploadOptions(deps: ApiDeps, projectId: string, dockerfilePath: string) {
  const { storage, config } = deps;
  const budget = await storedBytesBudget(deps, projectId);
  return {
    storage,
    tmpDir: uploadTmpDir(config),
    limits: contextLimitsOf(config.limits),
    dockerfilePath,
    allowedFrontends: config.allowedFrontends,
    ...(budget ? { budget } : {}),
  };
}

/**
 * The stored-bytes quota, applied while an upload arrives rather than once it is whole: an upload
 * larger than what the quota leaves and than every context the project's builds were given can be
 * neither one it holds already, nor a result-cache answer, nor an idempotent retry, so admission
 * (create-build.ts) would refuse it. It is refused at that point, and the rest is not read.
 * Without a quota, there is no budget.
 */
async function storedBytesBudget(deps: ApiDeps, projectId: string): Promise<UploadBudget | undefined> {
  const { quotas, storedBytes } = await loadProjectQuotas(deps.db, deps.config.quotas, projectId);
  const left = storedBytesLeft(quotas, storedBytes);
  if (left === null) return undefined;
  return {
    bytes: Math.max(left, 0),
    limit: () => deps.builds.largestContextOf(projectId),
    refusal: (received) =>
      new AppError(
        'quota_exceeded',
        `the project keeps ${storedBytes} bytes stored and this upload already brings ${received} bytes, over its limit (stored bytes: ${quotas.storedBytes}); builds past retention free theirs`,
      ),
  };
}

/** The query's spec fields (docker-style repeatable `build-arg=K=V` / `label=K=V` included). */
function specFromQuery(query: Record<string, unknown>): SpecFields {
  const fields = new SpecFields();
  for (const [k, v] of Object.entries(query)) {
    if (k === 'secrets' || k === 'secret') {
      throw new AppError(
        'invalid_spec',
        'secrets are not accepted in the query string (URLs end up in logs): send them in the JSON "spec" part of a multipart request',
      );
    }
    if (k !== 'build-arg' && k !== 'label' && !SPEC_FIELDS.includes(k))
      throw new AppError('invalid_spec', `unknown parameter "${k.slice(0, 100)}"`);
    fields.add(k, v, QUERY);
  }
  return fields;
}

/**
 * A JSON body's fields with the query's spec fields (`?platform=...`) beside them, as an upload
 * takes them: a field given in both is refused, never one of them dropped. A body that is not an
 * object is left for its parser to refuse.
 */
function withQuerySpec(req: BuildRequest): unknown {
  const body: unknown = req.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const fields = specFromQuery(req.query);
  fields.addAll(body as Record<string, unknown>, 'the JSON body');
  return fields.spec;
}

/** Fastify's JSON parser has run: the body is a remote-context request, not an upload. */
function isJsonBody(req: FastifyRequest): boolean {
  return mediaType(req.headers['content-type']) === 'application/json';
}

function isStream(body: unknown): body is Readable {
  return typeof body === 'object' && body !== null && typeof (body as Readable).pipe === 'function';
}

function parseSpecJson(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new AppError('invalid_spec', 'the "spec" field must be a JSON object');
}
