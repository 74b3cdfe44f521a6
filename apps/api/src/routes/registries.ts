import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  AppError,
  normalizeRegistryHost,
  RegistryCredentialStore,
  type RegistryCredentialView,
} from '@kiln/core';
import { Type } from 'typebox';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

/** Most registries cap passwords and tokens far below this; it only bounds the row. */
const MAX_SECRET = 16 * 1024;

const credentialView = Type.Object({
  host: Type.String(),
  username: Type.String(),
  updatedAt: Type.String({ format: 'date-time' }),
  /** False: this Kiln's credentials key no longer opens it (builds go without it); set it again. */
  usable: Type.Boolean(),
});
const hostParams = Type.Object({ host: Type.String({ minLength: 1, maxLength: 300 }) });

const json = (c: RegistryCredentialView) => ({
  host: c.host,
  username: c.username,
  updatedAt: c.updatedAt.toISOString(),
  usable: c.usable,
});

/**
 * The project's registry logins (manage scope): set, list (never the secret), delete. Workers
 * serve them to BuildKit, by host, for every build of the project (pushes of image outputs, and
 * pulls of private base images).
 */
export function registryRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const store = new RegistryCredentialStore(deps.db, deps.config.credentialsKeys);
  return async (app) => {
    app.put(
      '/v1/registry-credentials/:host',
      {
        schema: {
          summary: "Set the project's login to a registry (host[:port]; docker.io for Docker Hub)",
          params: hostParams,
          body: Type.Object(
            {
              username: Type.String({ minLength: 1, maxLength: 255 }),
              password: Type.String({ minLength: 1, maxLength: MAX_SECRET }),
            },
            { additionalProperties: false },
          ),
          response: { 200: credentialView, ...buildErrors },
        },
      },
      async (req) => {
        const host = normalizeRegistryHost(req.params.host);
        const login = { username: req.body.username, secret: req.body.password };
        return json(await store.put(req.projectId, host, login, deps.config.registries.loginsPerProject));
      },
    );

    app.get(
      '/v1/registry-credentials',
      {
        schema: {
          summary: "The project's registry logins (hosts and usernames, never the secrets)",
          response: { 200: Type.Object({ items: Type.Array(credentialView) }), ...buildErrors },
        },
      },
      async (req) => ({ items: (await store.list(req.projectId)).map(json) }),
    );

    app.delete(
      '/v1/registry-credentials/:host',
      {
        schema: {
          summary: "Delete the project's login to a registry",
          params: hostParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const host = normalizeRegistryHost(req.params.host);
        if (!(await store.delete(req.projectId, host))) {
          throw new AppError('not_found', `no credentials for ${host}`);
        }
        return reply.code(204).send();
      },
    );
  };
}
