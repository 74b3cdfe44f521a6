// Go's string and path helpers, reproduced where JavaScript's own differ: the walk must
// name, order and filter entries exactly as the Go sender (docker CLI / buildx) does.

/** Go's `path.Clean` (and `filepath.Clean` on Unix): lexical, no file system access. */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const n = p.length;
  const out: string[] = [];
  let r = 0;
  // Index in `out` that `..` may not backtrack past.
  let dotdot = 0;
  if (rooted) {
    out.push('/');
    r = 1;
    dotdot = 1;
  }
  while (r < n) {
    if (p[r] === '/') {
      r++;
    } else if (p[r] === '.' && (r + 1 === n || p[r + 1] === '/')) {
      r++;
    } else if (p[r] === '.' && p[r + 1] === '.' && (r + 2 === n || p[r + 2] === '/')) {
      r += 2;
      if (out.length > dotdot) {
        let w = out.length - 1;
        while (w > dotdot && out[w] !== '/') w--;
        out.length = w;
      } else if (!rooted) {
        if (out.length > 0) out.push('/');
        out.push('.', '.');
        dotdot = out.length;
      }
    } else {
      if ((rooted && out.length !== 1) || (!rooted && out.length !== 0)) out.push('/');
      for (; r < n && p[r] !== '/'; r++) out.push(p[r] as string);
    }
  }
  return out.length === 0 ? '.' : out.join('');
}

/** Go's `filepath.Join`: empty elements are ignored and the result is cleaned. */
export function joinPath(...elems: string[]): string {
  const parts = elems.filter((e) => e !== '');
  return parts.length === 0 ? '' : cleanPath(parts.join('/'));
}

/** Go's `filepath.Dir`. */
export function dirPath(p: string): string {
  return cleanPath(p.slice(0, p.lastIndexOf('/') + 1));
}

/** Go's `filepath.Base`. */
export function basePath(p: string): string {
  if (p === '') return '.';
  const trimmed = p.replace(/\/+$/, '');
  if (trimmed === '') return '/';
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

// UTF-16 code units sort surrogates (astral code points) before U+E000..U+FFFF; UTF-8 bytes
// and code points sort them after. Shifting both ranges restores code point order.
function codePointOrderUnit(u: number): number {
  if (u < 0xd800) return u;
  return u >= 0xe000 ? u - 0x800 : u + 0x2000;
}

/** Go's string order (bytewise UTF-8), which is how `os.ReadDir` and `sort.Strings` order names. */
export function compareGoStrings(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointOrderUnit(x) - codePointOrderUnit(y);
  }
  return a.length - b.length;
}

// Go's unicode.IsSpace: JavaScript's trim() also strips U+FEFF and keeps U+0085.
function isGoSpace(c: number): boolean {
  if (c <= 0xff) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0x85 || c === 0xa0;
  return (
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

/** Go's `strings.TrimSpace`. */
export function trimSpace(s: string): string {
  let start = 0;
  let end = s.length;
  // Every Go space is in the BMP, so checking code units is enough.
  while (start < end && isGoSpace(s.charCodeAt(start))) start++;
  while (end > start && isGoSpace(s.charCodeAt(end - 1))) end--;
  return s.slice(start, end);
}
