/** `tcp://user:secret@host:1234?token=x` → `tcp://***@host:1234?***`: builders are shown to every project. */
export function redactAddress(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, '$1***@')
    .replace(/(:\/\/[^\s?]*)\?\S*/g, '$1?***');
}
