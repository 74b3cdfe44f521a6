/** The message of a thrown value, for logs and published health. */
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));
