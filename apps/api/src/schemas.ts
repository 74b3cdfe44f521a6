/** JSON Schemas shared by the routes: they validate input, speed up output and make the OpenAPI document. */
export const errorSchema = {
  $id: 'Error',
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
      required: ['code', 'message'],
    },
  },
} as const;

const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;

export const buildSchema = {
  $id: 'Build',
  type: 'object',
  properties: {
    id: { type: 'string' },
    status: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'] },
    spec: { type: 'object', additionalProperties: true },
    /** api (an upload or POST with {git}), github or gitlab (a webhook push). */
    source: { type: 'string' },
    context: {
      type: ['object', 'null'],
      properties: { digest: { type: 'string' }, size: { type: 'integer' } },
    },
    /** A git build: the repository, the ref as given or pushed, the commit when known, the trigger. */
    git: {
      type: ['object', 'null'],
      properties: {
        url: { type: 'string' },
        ref: { type: ['string', 'null'] },
        commit: { type: ['string', 'null'] },
        trigger: { type: ['string', 'null'] },
      },
    },
    attempts: { type: 'integer' },
    builder: { type: ['string', 'null'] },
    /** Platform the artifact was built for (os/arch[/variant]), once known. */
    platform: { type: ['string', 'null'] },
    /** Answered from the result cache: shares the artifact of the build `cachedFrom` names. */
    cached: { type: 'boolean' },
    cachedFrom: { type: ['string', 'null'] },
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: nullableTime,
    finishedAt: nullableTime,
    error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } },
    artifact: {
      type: 'object',
      properties: {
        filename: { type: 'string' },
        size: { type: 'integer' },
        digest: { type: ['string', 'null'] },
        url: { type: 'string' },
        expiresAt: { type: 'string', format: 'date-time' },
      },
    },
    links: { type: 'object', additionalProperties: { type: 'string' } },
  },
  required: ['id', 'status', 'spec', 'createdAt', 'links'],
} as const;

export const buildListSchema = {
  $id: 'BuildList',
  type: 'object',
  properties: {
    items: { type: 'array', items: { $ref: 'Build#' } },
    nextCursor: { type: ['string', 'null'] },
  },
} as const;

export const idParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[0-9A-Za-z]{1,64}$' } },
  required: ['id'],
} as const;

/** Responses every authenticated build route may give besides its success. */
export const buildErrors = { '4xx': { $ref: 'Error#' }, '5xx': { $ref: 'Error#' } } as const;
