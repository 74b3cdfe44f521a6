import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  AppError,
  checkEndpointUrl,
  generateEndpointSecret,
  MAX_ENDPOINTS_PER_PROJECT,
  type Prisma,
} from '@kiln/core';
import { Type } from 'typebox';
import type { ApiDeps } from '../deps.js';
import { buildErrors, cursor, idParams, pageLimit } from '../schemas.js';

/** Advisory-lock class ("KEVE"): endpoint creations of one project. */
const ENDPOINTS_LOCK_CLASS = 0x4b455645;

const time = { type: 'string', format: 'date-time' } as const;
const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;

const endpointView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    url: { type: 'string' },
    createdAt: time,
    /** Set once DELETEd: no events are sent to it any more; its delivery log stays readable. */
    disabledAt: nullableTime,
  },
} as const;

const deliveryView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    endpointId: { type: 'string' },
    buildId: { type: 'string' },
    event: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
    attempts: { type: 'integer' },
    createdAt: time,
    deliveredAt: nullableTime,
    /** Every attempt, first to last: the receiver's HTTP status, or why there was none. */
    attemptLog: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          number: { type: 'integer' },
          at: time,
          statusCode: { type: ['integer', 'null'] },
          error: { type: ['string', 'null'] },
          durationMs: { type: 'integer' },
        },
      },
    },
  },
} as const;

const deliveryList = {
  type: 'object',
  properties: { items: { type: 'array', items: deliveryView }, nextCursor: { type: ['string', 'null'] } },
} as const;

type EndpointRow = { id: string; url: string; createdAt: Date; disabledAt: Date | null };
const attemptsInOrder = { attemptLog: { orderBy: { number: 'asc' } } } as const;
type DeliveryRow = Prisma.EventDeliveryGetPayload<{ include: typeof attemptsInOrder }>;

const endpointJson = (e: EndpointRow) => ({
  id: e.id,
  url: e.url,
  createdAt: e.createdAt.toISOString(),
  disabledAt: e.disabledAt?.toISOString() ?? null,
});

const deliveryJson = (d: DeliveryRow) => ({
  id: d.id,
  endpointId: d.endpointId,
  buildId: d.buildId,
  event: d.event,
  status: d.status,
  attempts: d.attempts,
  createdAt: d.createdAt.toISOString(),
  deliveredAt: d.deliveredAt?.toISOString() ?? null,
  attemptLog: d.attemptLog.map((a) => ({
    number: a.number,
    at: a.at.toISOString(),
    statusCode: a.statusCode,
    error: a.error,
    durationMs: a.durationMs,
  })),
});

/**
 * Completion-event endpoints of the project: register (the signing secret is in that answer
 * only), list, disable, and read the delivery log, per endpoint or per build. Another project's
 * ids are 404s, as for builds.
 */
export function endpointRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;

  const findEndpoint = async (projectId: string, id: string) => {
    const endpoint = await db.eventEndpoint.findFirst({ where: { id, projectId } });
    if (!endpoint) throw new AppError('not_found', `no endpoint ${id}`);
    return endpoint;
  };

  return async (app) => {
    app.post(
      '/v1/endpoints',
      {
        schema: {
          summary: 'Register an endpoint for completion events; its signing secret is in this answer only',
          body: Type.Object({
            // Unknown here: a typed schema would coerce (null → "", [x] → x); every bad value is an
            // invalid_endpoint from checkEndpointUrl instead.
            url: Type.Unknown({ description: 'http:// or https:// URL Kiln POSTs events to' }),
          }),
          response: {
            201: { type: 'object', properties: { ...endpointView.properties, secret: { type: 'string' } } },
            ...buildErrors,
          },
        },
      },
      async (req, reply) => {
        const body = req.body;
        // Refused, not dropped: a caller sending its own `secret` must learn it is not used.
        const unknown = Object.keys(body).find((k) => k !== 'url');
        if (unknown !== undefined) {
          throw new AppError(
            'invalid_request',
            `unknown field "${unknown}": send only {"url": "https://..."}`,
          );
        }
        const url = checkEndpointUrl(body.url, deps.config.events.allowedNetworks);
        const secret = generateEndpointSecret();
        // Creations of one project take turns, each counting after its lock is held: two at once
        // cannot both take the last place.
        const row = await db.$transaction(async (tx) => {
          await tx.$executeRaw`SELECT pg_advisory_xact_lock(${ENDPOINTS_LOCK_CLASS}::int4, hashtext(${req.projectId}))`;
          const active = await tx.eventEndpoint.count({
            where: { projectId: req.projectId, disabledAt: null },
          });
          if (active >= MAX_ENDPOINTS_PER_PROJECT) {
            throw new AppError(
              'conflict',
              `this project already has ${MAX_ENDPOINTS_PER_PROJECT} endpoints: delete one first`,
            );
          }
          return tx.eventEndpoint.create({ data: { projectId: req.projectId, url, secret } });
        });
        return reply.code(201).send({ ...endpointJson(row), secret });
      },
    );

    app.get(
      '/v1/endpoints',
      {
        schema: {
          summary: "The project's event endpoints (without their secrets)",
          response: {
            200: { type: 'object', properties: { items: { type: 'array', items: endpointView } } },
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const rows = await db.eventEndpoint.findMany({
          where: { projectId: req.projectId },
          orderBy: { id: 'asc' },
        });
        return { items: rows.map(endpointJson) };
      },
    );

    app.get(
      '/v1/endpoints/:id',
      {
        schema: {
          summary: 'One event endpoint (without its secret)',
          params: idParams,
          response: { 200: endpointView, ...buildErrors },
        },
      },
      async (req) => endpointJson(await findEndpoint(req.projectId, req.params.id)),
    );

    app.delete(
      '/v1/endpoints/:id',
      {
        schema: {
          summary: 'Disable an endpoint: nothing more is sent to it; its delivery log stays',
          params: idParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const endpoint = await findEndpoint(req.projectId, req.params.id);
        if (!endpoint.disabledAt) {
          await db.$transaction([
            db.eventEndpoint.updateMany({
              where: { id: endpoint.id, disabledAt: null },
              data: { disabledAt: new Date() },
            }),
            // Queued retries find the endpoint disabled and stop; the log says so at once.
            db.eventDelivery.updateMany({
              where: { endpointId: endpoint.id, status: 'pending' },
              data: { status: 'failed' },
            }),
          ]);
        }
        return reply.code(204).send();
      },
    );

    app.get(
      '/v1/endpoints/:id/deliveries',
      {
        schema: {
          summary: "An endpoint's delivery log, newest first, with every attempt",
          params: idParams,
          querystring: Type.Object(
            {
              status: Type.Optional(Type.Enum(['pending', 'delivered', 'failed'], { type: 'string' })),
              cursor: Type.Optional(cursor),
              limit: pageLimit,
            },
            { additionalProperties: false },
          ),
          response: { 200: deliveryList, ...buildErrors },
        },
      },
      async (req) => {
        const endpoint = await findEndpoint(req.projectId, req.params.id);
        const q = req.query;
        const rows = await db.eventDelivery.findMany({
          where: {
            endpointId: endpoint.id,
            ...(q.status ? { status: q.status } : {}),
            ...(q.cursor ? { id: { lt: q.cursor } } : {}),
          },
          include: attemptsInOrder,
          orderBy: { id: 'desc' },
          take: q.limit + 1,
        });
        const page = rows.slice(0, q.limit);
        return {
          items: page.map(deliveryJson),
          nextCursor: rows.length > q.limit ? (page.at(-1)?.id ?? null) : null,
        };
      },
    );

    app.get(
      '/v1/builds/:id/events',
      {
        // The endpoints' delivery log, as under /v1/endpoints: its errors can name a receiver's hosts.
        config: { scope: 'manage' },
        schema: {
          summary: "A build's completion events: one delivery per endpoint, with every attempt",
          params: idParams,
          response: { 200: deliveryList, ...buildErrors },
        },
      },
      async (req) => {
        const build = await deps.builds.projectBuild(req.projectId, req.params.id);
        if (!build) throw new AppError('not_found', `no build ${req.params.id}`);
        const rows = await db.eventDelivery.findMany({
          where: { buildId: build.id },
          include: attemptsInOrder,
          orderBy: { id: 'asc' },
        });
        return { items: rows.map(deliveryJson), nextCursor: null };
      },
    );
  };
}
