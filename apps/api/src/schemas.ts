import { BuildListSchema, BuildViewSchema, ErrorSchema } from '@kiln/contract/schemas';
import { Type } from 'typebox';

/** Schemas every route may point at by `$ref` (registered once on the app, named in /docs). */
export const sharedSchemas = [ErrorSchema, BuildViewSchema, BuildListSchema];

export const idParams = Type.Object({ id: Type.String({ pattern: '^[0-9A-Za-z]{1,64}$' }) });

/** `?status=&cursor=&limit=` of the paged lists (builds, deliveries). */
export const cursor = Type.String({ pattern: '^[0-9A-Za-z]{1,64}$' });
export const pageLimit = Type.Integer({ minimum: 1, maximum: 100, default: 20 });

/** Responses every authenticated build route may give besides its success. */
export const buildErrors = { '4xx': { $ref: 'Error#' }, '5xx': { $ref: 'Error#' } } as const;
