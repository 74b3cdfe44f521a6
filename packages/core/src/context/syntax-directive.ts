/**
 * A Dockerfile's frontend directive: `# syntax=<image>` (or `// syntax=`, or a JSON file with a
 * `syntax` key) makes BuildKit's Dockerfile frontend hand the build to that image instead of
 * parsing the file itself. BuildKit honours only an unbroken run of directive lines at the top;
 * this reads every leading comment and blank line, so it finds at least what BuildKit would.
 */

/** Bytes of the Dockerfile's start the validator keeps for this check. */
export const DIRECTIVE_HEAD_BYTES = 64 * 1024;

/** What a Dockerfile's start says about its frontend. */
export type FrontendDirective =
  | { kind: 'none' }
  | { kind: 'image'; image: string }
  /** A JSON file longer than the head kept: whether it names a frontend cannot be told. */
  | { kind: 'unknown' };

const directiveLine = (prefix: string) =>
  new RegExp(`^${prefix}\\s*([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$`);
const FORMS: Array<[prefix: string, directive: RegExp]> = [
  ['#', directiveLine('#')],
  ['//', directiveLine('//')],
];

/** `head`: the Dockerfile's first bytes; `complete`: whether they are the whole file. */
export function frontendDirective(head: Buffer, complete: boolean): FrontendDirective {
  const text = head.toString('utf8').replace(/^\uFEFF/, '');
  for (const [prefix, directive] of FORMS) {
    for (const raw of text.split('\n')) {
      const line = raw.replace(/\r$/, '').trim();
      if (line === '') continue;
      if (!line.startsWith(prefix)) break;
      const m = directive.exec(line);
      if (m && m[1]?.toLowerCase() === 'syntax' && m[2]) return { kind: 'image', image: m[2] };
    }
  }
  if (text.trimStart().startsWith('{')) {
    if (!complete) return { kind: 'unknown' };
    try {
      const json: unknown = JSON.parse(text);
      const syntax = (json as Record<string, unknown> | null)?.syntax;
      if (typeof syntax === 'string') return { kind: 'image', image: syntax };
    } catch {
      // Not JSON: the frontend parses it as a Dockerfile.
    }
  }
  return { kind: 'none' };
}
