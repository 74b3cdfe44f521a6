import { Buffer } from 'node:buffer';
import { BuildkitError } from '../errors.js';
import { cleanPath, trimSpace } from './gostrings.js';

/** Go's bufio.Scanner gives up on a line that does not fit its 64 KiB buffer. */
const MAX_LINE_BYTES = 64 * 1024;

/** A .dockerignore line is too long for Go's line scanner, so docker would reject the file too. */
export class DockerignoreError extends BuildkitError {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super('DOCKERIGNORE_LINE_TOO_LONG', message);
  }
}

/**
 * moby/patternmatcher `ignorefile.ReadAll`: the patterns of a .dockerignore file, in order,
 * ready for {@link PatternMatcher} (`!` kept as a prefix).
 */
export function parseDockerignore(text: string): string[] {
  const lines = text.split('\n');
  // A final newline ends the last line rather than starting an empty one.
  if (lines.at(-1) === '') lines.pop();
  const patterns: string[] = [];
  lines.forEach((rawLine, index) => {
    let line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    // The scanner's limit applies to the raw line, `\r` and byte order mark included.
    if (Buffer.byteLength(rawLine, 'utf8') >= MAX_LINE_BYTES) {
      throw new DockerignoreError(
        `.dockerignore line ${index + 1}: bufio.Scanner: token too long`,
        index + 1,
      );
    }
    if (index === 0 && line.startsWith('\uFEFF')) line = line.slice(1);
    // A comment is a `#` in the very first column: ` # x` is the pattern `# x`.
    if (line.startsWith('#')) return;
    let pattern = trimSpace(line);
    if (pattern === '') return;
    const invert = pattern.startsWith('!');
    if (invert) pattern = trimSpace(pattern.slice(1));
    if (pattern !== '') {
      pattern = cleanPath(pattern);
      // `/foo` means `foo`: paths are relative to the context root anyway.
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    patterns.push(invert ? `!${pattern}` : pattern);
  });
  return patterns;
}
