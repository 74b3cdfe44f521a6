/**
 * The API's shapes as TypeBox schemas (route validation, serialization, OpenAPI) and their
 * static types. A subpath of its own (`@kiln/contract/schemas`): TypeBox costs some 17 MiB of
 * memory to load, which the worker and the CLI, needing only the vocabulary, do not pay.
 */
import { type Static, type TSchema, Type } from 'typebox';
import { ERROR_CODES } from './errors.js';
import { TOKEN_SCOPES } from './scopes.js';
import { BUILD_STATUSES } from './statuses.js';

// `type` beside `enum` lets the response serializer write it as a plain string.
export const BuildStatusSchema = Type.Enum(BUILD_STATUSES, { type: 'string' });
export const TokenScopeSchema = Type.Enum(TOKEN_SCOPES, { type: 'string' });

/** `T | null` as one JSON Schema type list, which the response serializer writes without trying branches. */
function Nullable<T extends TSchema & { type: string }>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });
}

const Time = Type.String({ format: 'date-time' });
const StringMap = Type.Record(Type.String(), Type.String());

/**
 * A build's spec as stored: the normalized export spec. Open to other fields so that a spec
 * stored by another version still reads.
 */
export const BuildSpecViewSchema = Type.Object(
  {
    output: Type.Optional(
      Type.Object({
        type: Type.Optional(Type.String()),
        dest: Type.Optional(Type.String()),
        attrs: Type.Optional(StringMap),
      }),
    ),
    file: Type.Optional(Type.String()),
    target: Type.Optional(Type.String()),
    buildArgs: Type.Optional(StringMap),
    platform: Type.Optional(Type.String()),
    labels: Type.Optional(StringMap),
    noCache: Type.Optional(Type.Boolean()),
    network: Type.Optional(Type.String()),
    /** Ids only: values are never stored. */
    secrets: Type.Optional(Type.Array(Type.String())),
    /** SLSA provenance asked of BuildKit: `min` or `max` (its `attest:provenance` mode). */
    provenance: Type.Optional(Type.String()),
    /** SOURCE_DATE_EPOCH: seconds since the epoch the exporters stamp on every file. */
    sourceDateEpoch: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

export const ArtifactSchema = Type.Object({
  filename: Type.String(),
  size: Type.Integer(),
  digest: Nullable(Type.String()),
  url: Type.String(),
  expiresAt: Time,
});

/** Kiln's copy of the SLSA provenance BuildKit wrote into a tar artifact, by its own signed URL. */
export const ProvenanceSchema = Type.Object({
  mode: Type.String(),
  url: Type.String(),
  expiresAt: Time,
});

/**
 * The JSON a caller sees for a build. A succeeded one carries `artifact` with a freshly signed
 * URL (an expired one none); a failed or canceled one `error`. A git build (POST with {git}, or a
 * webhook push) has `git` and a null `context`.
 */
export const BuildViewSchema = Type.Object(
  {
    id: Type.String(),
    status: BuildStatusSchema,
    spec: BuildSpecViewSchema,
    /** api (an upload or POST with {git}), github or gitlab (a webhook push). */
    source: Type.String(),
    context: Nullable(Type.Object({ digest: Type.String(), size: Type.Integer() })),
    /** The repository, the ref as given or pushed, the commit when known, the trigger. */
    git: Nullable(
      Type.Object({
        url: Type.String(),
        ref: Nullable(Type.String()),
        commit: Nullable(Type.String()),
        trigger: Nullable(Type.String()),
      }),
    ),
    attempts: Type.Integer(),
    builder: Nullable(Type.String()),
    /** Platform the artifact was built for (os/arch[/variant]), once known. */
    platform: Nullable(Type.String()),
    /** Answered from the result cache: shares the artifact of the build `cachedFrom` names. */
    cached: Type.Boolean(),
    cachedFrom: Nullable(Type.String()),
    createdAt: Time,
    startedAt: Nullable(Time),
    finishedAt: Nullable(Time),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
    artifact: Type.Optional(ArtifactSchema),
    provenance: Type.Optional(ProvenanceSchema),
    /** An image output: what was pushed (the image is in the registry; there is no artifact). */
    image: Type.Optional(Type.Object({ name: Type.String(), digest: Type.String() })),
    links: Type.Object({
      self: Type.String(),
      logs: Type.String(),
      artifact: Type.String(),
      provenance: Type.Optional(Type.String()),
      cancel: Type.String(),
    }),
  },
  { $id: 'Build' },
);
export type BuildView = Static<typeof BuildViewSchema>;
export type Artifact = Static<typeof ArtifactSchema>;
export type Provenance = Static<typeof ProvenanceSchema>;

export const BuildListSchema = Type.Object(
  {
    // By reference: the server registers Build once and every route shares it.
    items: Type.Array(Type.Unsafe<BuildView>({ $ref: 'Build#' })),
    nextCursor: Nullable(Type.String()),
  },
  { $id: 'BuildList' },
);
export type BuildList = Static<typeof BuildListSchema>;

/** Every error answer: `{error: {code, message}}`, the message written for the caller. */
export const ErrorSchema = Type.Object(
  {
    error: Type.Object({
      code: Type.Enum(ERROR_CODES, { type: 'string' }),
      message: Type.String(),
    }),
  },
  { $id: 'Error' },
);
export type ErrorBody = Static<typeof ErrorSchema>;
