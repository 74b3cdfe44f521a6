/**
 * `tcp://user:secret@host:1234?token=x` → `tcp://***@host:1234?***`, wherever such addresses
 * are shown or logged: builders (shown to every project), start-up errors, refused git URLs.
 * Everything before an `@` after the scheme goes, `/` included (a token may hold one, and then
 * the URL does not parse): a path with an `@` and no credentials loses more than it needs to.
 */
export function redactAddress(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s@]*@/gi, '$1***@')
    .replace(/(:\/\/[^\s?]*)\?\S*/g, '$1?***');
}
