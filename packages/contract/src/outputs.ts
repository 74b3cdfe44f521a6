/** What a build produces, in `docker build --output` terms. */
export const OUTPUT_TYPES = ['tar', 'local', 'oci', 'docker', 'image'] as const;
export type OutputType = (typeof OUTPUT_TYPES)[number];

/** Output types BuildKit exports as one byte stream, stored as the artifact as it is. */
export const BYTE_OUTPUT_TYPES = ['tar', 'oci', 'docker'] as const satisfies readonly OutputType[];
export type ByteOutputType = (typeof BYTE_OUTPUT_TYPES)[number];

/**
 * What an artifact may be called (the output's `dest`): a plain file name that is also a segment
 * of a storage key, which S3 and the local store both take as it is (no `+`, which some S3
 * servers read as a space, and nothing hidden or option-like at its start).
 */
export const ARTIFACT_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$/;
