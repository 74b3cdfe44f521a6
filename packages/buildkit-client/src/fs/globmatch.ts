import { Buffer } from 'node:buffer';

// Go's `filepath.Match` (Unix flavour). fsutil and patternmatcher rely on two of its quirks:
// it validates a whole pattern even after a mismatch (patternmatcher.New uses it only as a
// syntax check), and it walks names byte by byte, so `*` may stop inside a multi-byte rune.
// Working on UTF-8 bytes keeps both.

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const STAR = 0x2a;
const QUESTION = 0x3f;
const CARET = 0x5e;
const DASH = 0x2d;
const RUNE_ERROR = 0xfffd;

/** Thrown for a malformed pattern; the message is Go's `filepath.ErrBadPattern`. */
export class BadGlobError extends Error {
  constructor() {
    super('syntax error in pattern');
    this.name = 'BadGlobError';
  }
}

/** Go's `utf8.DecodeRune`: an invalid or truncated sequence decodes as U+FFFD of width 1. */
function decodeRune(buf: Uint8Array, i: number, end: number): [rune: number, width: number] {
  const b0 = buf[i] as number;
  if (b0 < 0x80) return [b0, 1];
  let need: number;
  let cp: number;
  let min: number;
  if (b0 >= 0xc2 && b0 <= 0xdf) [need, cp, min] = [1, b0 & 0x1f, 0x80];
  else if (b0 >= 0xe0 && b0 <= 0xef) [need, cp, min] = [2, b0 & 0x0f, 0x800];
  else if (b0 >= 0xf0 && b0 <= 0xf4) [need, cp, min] = [3, b0 & 0x07, 0x10000];
  else return [RUNE_ERROR, 1];
  for (let k = 1; k <= need; k++) {
    const b = buf[i + k];
    if (i + k >= end || b === undefined || (b & 0xc0) !== 0x80) return [RUNE_ERROR, 1];
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return [RUNE_ERROR, 1];
  return [cp, need + 1];
}

interface Chunk {
  star: boolean;
  start: number;
  end: number;
}

function scanChunk(pat: Uint8Array, from: number): Chunk {
  let p = from;
  let star = false;
  while (p < pat.length && pat[p] === STAR) {
    p++;
    star = true;
  }
  let inRange = false;
  let i = p;
  scan: for (; i < pat.length; i++) {
    switch (pat[i]) {
      case BACKSLASH:
        if (i + 1 < pat.length) i++;
        break;
      case LBRACKET:
        inRange = true;
        break;
      case RBRACKET:
        inRange = false;
        break;
      case STAR:
        if (!inRange) break scan;
        break;
    }
  }
  return { star, start: p, end: i };
}

function classChar(pat: Uint8Array, c: number, end: number): [rune: number, next: number] {
  if (c >= end || pat[c] === DASH || pat[c] === RBRACKET) throw new BadGlobError();
  let i = c;
  if (pat[i] === BACKSLASH) {
    i++;
    if (i >= end) throw new BadGlobError();
  }
  const [r, w] = decodeRune(pat, i, end);
  if (r === RUNE_ERROR && w === 1) throw new BadGlobError();
  i += w;
  if (i >= end) throw new BadGlobError();
  return [r, i];
}

/**
 * Matches one star-free chunk at `s[si..]`. Returns the index after the match, or -1.
 * Keeps parsing after a mismatch so that a malformed chunk always throws.
 */
function matchChunk(pat: Uint8Array, chunk: Chunk, s: Uint8Array, from: number): number {
  let si = from;
  let c = chunk.start;
  let failed = false;
  while (c < chunk.end) {
    if (!failed && si >= s.length) failed = true;
    const pc = pat[c];
    if (pc === LBRACKET) {
      let r = 0;
      if (!failed) {
        const [rr, w] = decodeRune(s, si, s.length);
        r = rr;
        si += w;
      }
      c++;
      let negated = false;
      if (c < chunk.end && pat[c] === CARET) {
        negated = true;
        c++;
      }
      let match = false;
      let nrange = 0;
      for (;;) {
        if (c < chunk.end && pat[c] === RBRACKET && nrange > 0) {
          c++;
          break;
        }
        let lo: number;
        [lo, c] = classChar(pat, c, chunk.end);
        let hi = lo;
        if (pat[c] === DASH) [hi, c] = classChar(pat, c + 1, chunk.end);
        if (lo <= r && r <= hi) match = true;
        nrange++;
      }
      if (match === negated) failed = true;
    } else if (pc === QUESTION) {
      if (!failed) {
        if (s[si] === SLASH) failed = true;
        si += decodeRune(s, si, s.length)[1];
      }
      c++;
    } else {
      if (pc === BACKSLASH) {
        c++;
        if (c >= chunk.end) throw new BadGlobError();
      }
      if (!failed) {
        if (pat[c] !== s[si]) failed = true;
        si++;
      }
      c++;
    }
  }
  return failed ? -1 : si;
}

const EMPTY = new Uint8Array(0);

/** Go's `filepath.Match(pattern, name)`; throws {@link BadGlobError} for a malformed pattern. */
export function goGlobMatch(pattern: string, name: string): boolean {
  const pat = Buffer.from(pattern, 'utf8');
  const s = Buffer.from(name, 'utf8');
  let p = 0;
  let n = 0;
  next: while (p < pat.length) {
    const chunk = scanChunk(pat, p);
    p = chunk.end;
    if (chunk.star && chunk.start === chunk.end) return s.indexOf(SLASH, n) < 0;
    const t = matchChunk(pat, chunk, s, n);
    if (t >= 0 && (t === s.length || p < pat.length)) {
      n = t;
      continue;
    }
    if (chunk.star) {
      for (let i = n; i < s.length && s[i] !== SLASH; i++) {
        const t2 = matchChunk(pat, chunk, s, i + 1);
        if (t2 < 0) continue;
        // The last chunk has to consume the rest of the name.
        if (p === pat.length && t2 < s.length) continue;
        n = t2;
        continue next;
      }
    }
    while (p < pat.length) {
      const rest = scanChunk(pat, p);
      p = rest.end;
      matchChunk(pat, rest, EMPTY, 0);
    }
    return false;
  }
  return n === s.length;
}
