import { status } from '../grpc/status.js';
import { decodeCredentialsRequest, encodeCredentialsResponse } from '../wire/messages.js';
import type { UnaryCall, UnaryCallback } from './grpc-server.js';

export interface RegistryCredentials {
  username: string;
  /** A password or an access token. */
  secret: string;
}

/**
 * Returns the credentials for a registry host as BuildKit names it (`host[:port]`; Docker Hub is
 * `registry-1.docker.io`), or undefined to go anonymous.
 */
export type RegistryAuth = (
  host: string,
) => RegistryCredentials | undefined | Promise<RegistryCredentials | undefined>;

/**
 * Serves `moby.filesync.v1.Auth/Credentials`, which BuildKit asks before pulling from or pushing
 * to a registry; it then does the basic or token handshake itself. The other Auth methods (token
 * authorities) are left unimplemented: BuildKit falls back to Credentials, as it does for buildctl
 * without a token seed. Errors name the host at most, never a secret.
 */
export function credentials(auth: RegistryAuth) {
  return (call: UnaryCall<Buffer>, callback: UnaryCallback<Buffer>): void => {
    let host: string;
    try {
      ({ host } = decodeCredentialsRequest(call.request));
    } catch {
      callback({ code: status.INVALID_ARGUMENT, details: 'malformed CredentialsRequest' });
      return;
    }
    Promise.resolve()
      .then(() => auth(host))
      .then(
        (found) => callback(null, encodeCredentialsResponse(found?.username ?? '', found?.secret ?? '')),
        () => callback({ code: status.INTERNAL, details: `the credentials provider failed for ${host}` }),
      );
  };
}
