/** What a build produces, in `docker build --output` terms. */
export const OUTPUT_TYPES = ['tar', 'local', 'oci', 'docker', 'image'] as const;
export type OutputType = (typeof OUTPUT_TYPES)[number];

/** Output types BuildKit exports as one byte stream, stored as the artifact as it is. */
export const BYTE_OUTPUT_TYPES = ['tar', 'oci', 'docker'] as const satisfies readonly OutputType[];
export type ByteOutputType = (typeof BYTE_OUTPUT_TYPES)[number];
