import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError, builderDrainingKey, builderLeaseKey } from '@kiln/core';
import { Type } from 'typebox';
import { staticTokenAuthenticator } from '../auth.js';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

/**
 * POST /v1/builders/drain, which a builder pod's preStop calls again and again while it stops
 * (deploy/kubernetes/base/buildkitd/drain.sh): the builder takes no new build for `seconds`, and
 * the answer says how many Kiln leases still name it. The pod reaches neither Redis nor
 * PostgreSQL, so it asks the API; behind KILN_BUILDER_DRAIN_TOKEN, which can do nothing else.
 */
export function builderDrainRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.addHook(
      'onRequest',
      staticTokenAuthenticator(deps.config.builderDrainToken, 'KILN_BUILDER_DRAIN_TOKEN'),
    );
    app.post(
      '/v1/builders/drain',
      {
        schema: {
          summary: 'Give a builder no new builds for a while; how many builds it still runs (builder pods)',
          hide: true,
          body: Type.Object(
            {
              /** As Kiln names it: `tcp://10.1.2.3:1234` for a member of a `dns+tcp://` builder. */
              address: Type.String({ minLength: 1, maxLength: 300, pattern: '^(tcp|unix|docker)://\\S+$' }),
              /** How long the mark lasts unless this is called again. */
              seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
            },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({ address: Type.String(), load: Type.Integer(), seconds: Type.Integer() }),
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const { address, seconds = 30 } = req.body;
        // One transaction, the mark first: a lease either counts here or is refused by the script.
        const replies = await deps.redis
          .multi()
          .set(builderDrainingKey(address), '1', 'EX', seconds)
          .time()
          .zrangebyscore(builderLeaseKey(address), '-inf', '+inf', 'WITHSCORES')
          .exec()
          .catch((err: Error) => {
            throw new AppError('unavailable', `Redis does not answer: ${err.message}`);
          });
        const failed = replies?.find(([err]) => err);
        if (!replies || failed) {
          throw new AppError('unavailable', `Redis does not answer: ${failed?.[0]?.message ?? 'no reply'}`);
        }
        const [, time] = replies[1] as [null, [string, string]];
        const [, leases] = replies[2] as [null, string[]];
        const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
        const scores = leases.filter((_, i) => i % 2 === 1).map(Number);
        const load = scores.filter((expiry) => expiry > now).length;
        req.log.info({ builder: address, load, seconds }, 'builder draining');
        return { address, load, seconds };
      },
    );
  };
}
