/**
 * What a project token may do. Each scope includes the ones before it: `read` sees builds, logs
 * and artifacts; `build` also creates and cancels builds; `manage` also administers the project's
 * tokens, triggers and event endpoints.
 */
export const TOKEN_SCOPES = ['read', 'build', 'manage'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

/** True when a token of scope `held` may do what needs `needed`. */
export function scopeAllows(held: TokenScope, needed: TokenScope): boolean {
  return TOKEN_SCOPES.indexOf(held) >= TOKEN_SCOPES.indexOf(needed);
}
