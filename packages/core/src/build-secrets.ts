/**
 * Build secrets (`RUN --mount=type=secret,id=ID`): values arrive with the spec (JSON spec or
 * form field, never the query string), are validated here, and travel API → worker through one
 * Redis hash per build (`kiln:build:<id>:secrets`, with a TTL, deleted once the build is final).
 * They are never part of the stored spec (only their ids are), the request hash, the result-cache
 * key, logs or errors: messages here name ids, never values. Each value is sealed under the
 * credentials key (AES-256-GCM, bound to the build and the id) before it reaches Redis, whose
 * snapshots and append-only file are written to disk and backed up: a Kiln without that key
 * refuses build secrets (requireSecretsKey).
 */
import { hkdfSync } from 'node:crypto';
import type { Redis } from 'ioredis';
import * as aead from './aead.js';
import { type CredentialsKeys, openUnderAny } from './credentials-keys.js';
import { AppError } from './errors.js';

/** Secret values by id. */
export type BuildSecrets = Record<string, Buffer>;

/** BuildKit refuses bigger secrets (secretsprovider.MaxSecretSize). */
export const MAX_SECRET_BYTES = 500 * 1024;
export const MAX_SECRETS = 64;
/** docker's ids are free-form, but an id also names the file /run/secrets/ID: keep it one plain name. */
const SECRET_ID = /^(?!\.+$)[A-Za-z0-9_.-]{1,128}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function invalid(message: string): never {
  throw new AppError('invalid_spec', message);
}

/**
 * `{ID: "text"}` or `{ID: {base64: "..."}}` for bytes that are not UTF-8 text, or a JSON string
 * of such an object (a form field). Ids come back sorted.
 */
export function parseBuildSecrets(value: unknown): BuildSecrets {
  if (value === undefined || value === null || value === '') return {};
  let raw = value;
  if (typeof raw === 'string') {
    try {
      raw = JSON.parse(raw);
    } catch {
      // No detail: a parser's message quotes the text around the error.
      invalid('secrets is not valid JSON');
    }
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    invalid('secrets must be an object of id → value, e.g. {"npm_token": "..."}');
  }
  const entries = Object.entries(raw as Record<string, unknown>);
  if (entries.length > MAX_SECRETS) invalid(`secrets has more than ${MAX_SECRETS} entries`);
  const out: Array<[string, Buffer]> = [];
  for (const [id, v] of entries) {
    if (!SECRET_ID.test(id)) {
      invalid(`secret id "${id.slice(0, 100)}" is invalid: 1-128 letters, digits and . _ - only`);
    }
    out.push([id, secretBytes(id, v)]);
  }
  out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // fromEntries defines own properties: an id such as __proto__ stays a key.
  return Object.fromEntries(out);
}

function secretBytes(id: string, v: unknown): Buffer {
  let bytes: Buffer;
  if (typeof v === 'string') bytes = Buffer.from(v, 'utf8');
  else if (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.keys(v).length === 1 &&
    typeof (v as { base64?: unknown }).base64 === 'string'
  ) {
    const text = (v as { base64: string }).base64;
    if (text.length > Math.ceil(MAX_SECRET_BYTES / 3) * 4 + 4) tooBig(id);
    if (!BASE64.test(text)) invalid(`secrets.${id}.base64 is not valid base64`);
    bytes = Buffer.from(text, 'base64');
  } else return invalid(`secrets.${id} must be a string or {"base64": "..."}`);
  if (bytes.length > MAX_SECRET_BYTES) tooBig(id);
  return bytes;
}

function tooBig(id: string): never {
  return invalid(`secrets.${id} is larger than ${MAX_SECRET_BYTES} bytes (BuildKit's limit)`);
}

export const buildSecretsKey = (buildId: string) => `kiln:build:${buildId}:secrets`;

/**
 * How long a build's secrets may wait in Redis: a day of queueing plus every attempt running to
 * its timeout. A build that has not finished by then fails with `secrets_unavailable`.
 */
export function buildSecretsTtlSeconds(buildTimeoutSeconds: number, attempts: number): number {
  return 24 * 3600 + buildTimeoutSeconds * Math.max(1, attempts);
}

/**
 * The key build secrets are sealed under, or `conflict` when the operator set none: in clear they
 * would reach Redis's files on disk.
 */
export function requireSecretsKey(keys: CredentialsKeys | undefined): Buffer {
  if (!keys) {
    throw new AppError(
      'conflict',
      'build secrets need KILN_CREDENTIALS_KEY (or KILN_SIGNING_KEY) set on this Kiln: they are sealed before they are queued',
    );
  }
  return keys.current;
}

/**
 * The hash field that says the values are sealed: no secret id has a `:`. Always written (workers
 * of the release before it took values without it as they were).
 */
const SEALED = ':sealed';

/** The key values are sealed with, from the credentials key (KilnConfig.credentialsKeys). */
function sealingKey(credentialsKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', credentialsKey, 'kiln', 'build-secrets', 32));
}

const aad = (buildId: string, id: string) => Buffer.from(`${buildId}\0${id}`);

/** Nonce, tag and ciphertext in one field value. */
function seal(key: Buffer, buildId: string, id: string, value: Buffer): Buffer {
  const { iv, tag, body } = aead.seal(key, aad(buildId, id), value);
  return Buffer.concat([iv, tag, body]);
}

/** The value, or undefined when it was not sealed under this key for this build and id. */
function open(key: Buffer, buildId: string, id: string, sealed: Buffer): Buffer | undefined {
  if (sealed.length < 28) return undefined;
  try {
    const parts = { iv: sealed.subarray(0, 12), tag: sealed.subarray(12, 28), body: sealed.subarray(28) };
    return aead.open(key, aad(buildId, id), parts);
  } catch {
    return undefined;
  }
}

export async function storeBuildSecrets(
  redis: Redis,
  buildId: string,
  secrets: BuildSecrets,
  ttlSeconds: number,
  credentialsKey: Buffer,
): Promise<void> {
  const key = buildSecretsKey(buildId);
  const sealing = sealingKey(credentialsKey);
  const fields = new Map<string, Buffer>(
    Object.entries(secrets).map(([id, value]) => [id, seal(sealing, buildId, id, value)]),
  );
  fields.set(SEALED, Buffer.from('1'));
  let failure: unknown;
  try {
    const results = await redis.multi().del(key).hset(key, fields).expire(key, ttlSeconds).exec();
    failure = results ? results.find(([err]) => err)?.[0] : new Error('the transaction was discarded');
  } catch (err) {
    failure = err;
  }
  // A fresh error without the cause: ioredis attaches the failed command, values included.
  if (failure) throw new Error(`storing the build secrets failed: ${(failure as Error).message}`);
}

/**
 * The secrets with these ids; undefined when any is missing (Redis lost them, or they expired),
 * or was not sealed under one of these keys for this build and id.
 */
export async function loadBuildSecrets(
  redis: Redis,
  buildId: string,
  ids: readonly string[],
  keys: CredentialsKeys | undefined,
): Promise<BuildSecrets | undefined> {
  if (ids.length === 0) return {};
  const [sealed, ...values] = await redis.hmgetBuffer(buildSecretsKey(buildId), SEALED, ...ids);
  if (!sealed || !keys) return undefined;
  const sealingKeys = { current: sealingKey(keys.current), previous: keys.previous.map(sealingKey) };
  const opened = ids.map((id, i) => {
    const value = values[i];
    return value ? openUnderAny(sealingKeys, (key) => open(key, buildId, id, value))?.value : undefined;
  });
  if (opened.some((v) => v === undefined)) return undefined;
  return Object.fromEntries(ids.map((id, i) => [id, opened[i] as Buffer]));
}

export async function deleteBuildSecrets(redis: Redis, buildId: string): Promise<void> {
  await redis.del(buildSecretsKey(buildId));
}
