import { status } from '../grpc/status.js';
import { decodeGetSecretRequest, encodeGetSecretResponse } from '../wire/messages.js';
import type { UnaryCall, UnaryCallback } from './grpc-server.js';

export type SecretValue = Buffer | string;

/** Returns the secret with this id, or undefined when there is none (BuildKit then reports it as not found). */
export type SecretProvider = (
  id: string,
  annotations: Record<string, string>,
) => SecretValue | undefined | Promise<SecretValue | undefined>;

/** Secrets a build may mount (`RUN --mount=type=secret,id=...`): values by id, or a lookup function. */
export type Secrets = Record<string, SecretValue> | SecretProvider;

function lookupFor(secrets: Secrets): SecretProvider {
  if (typeof secrets === 'function') return secrets;
  // A Map, so ids such as `constructor` or `__proto__` cannot resolve to inherited properties.
  const byId = new Map(Object.entries(secrets));
  return (id) => byId.get(id);
}

/**
 * Serves `moby.buildkit.secrets.v1.Secrets/GetSecret`. Status details name the id at most, never
 * a value or a provider's error text (which could quote one): BuildKit puts them in build errors.
 */
export function getSecret(secrets: Secrets) {
  const lookup = lookupFor(secrets);
  return (call: UnaryCall<Buffer>, callback: UnaryCallback<Buffer>): void => {
    let id: string;
    let annotations: Record<string, string>;
    try {
      ({ id, annotations } = decodeGetSecretRequest(call.request));
    } catch {
      callback({ code: status.INVALID_ARGUMENT, details: 'malformed GetSecretRequest' });
      return;
    }
    Promise.resolve()
      .then(() => lookup(id, annotations))
      .then(
        (value) => {
          if (value === undefined) {
            callback({ code: status.NOT_FOUND, details: `secret ${id} not found` });
          } else {
            callback(null, encodeGetSecretResponse(typeof value === 'string' ? Buffer.from(value) : value));
          }
        },
        () => callback({ code: status.INTERNAL, details: `the secret provider failed for ${id}` }),
      );
  };
}
