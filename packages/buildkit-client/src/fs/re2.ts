// patternmatcher turns globs into Go regexp (RE2, Perl flags) source and copies the user's
// brackets and backslash escapes into it verbatim, so `[[:digit:]]`, `\d` or `\x41` in a
// .dockerignore mean what RE2 says they mean, and some globs that filepath.Match accepts fail
// to compile. This parses that source with RE2's rules and emits an equivalent JavaScript
// RegExp (`v` flag, code point semantics like Go's runes).
//
// Input domain: the output of `compileGlob`. It never contains `|`, `{`, `+`, a bare `(` of the
// user's, or a repetition right after an assertion, so those RE2 forms are not handled.

const MAX_RUNE = 0x10ffff;

/** The regexp source is not valid RE2; patternmatcher reports it as a bad pattern. */
export class Re2SyntaxError extends Error {
  constructor(message: string) {
    super(`error parsing regexp: ${message}`);
    this.name = 'Re2SyntaxError';
  }
}

type Range = readonly [lo: number, hi: number];

const ch = (s: string): number => s.codePointAt(0) as number;
const R = (lo: string, hi: string = lo): Range => [ch(lo), ch(hi)];

const DIGIT: Range[] = [R('0', '9')];
const SPACE: Range[] = [R('\t', '\n'), R('\f', '\r'), R(' ')];
const WORD: Range[] = [R('0', '9'), R('A', 'Z'), R('_'), R('a', 'z')];
const PERL_GROUPS = new Map<string, Range[]>([
  ['d', DIGIT],
  ['s', SPACE],
  ['w', WORD],
]);

const POSIX_GROUPS = new Map<string, Range[]>([
  ['alnum', [R('0', '9'), R('A', 'Z'), R('a', 'z')]],
  ['alpha', [R('A', 'Z'), R('a', 'z')]],
  ['ascii', [[0, 0x7f]]],
  ['blank', [R('\t'), R(' ')]],
  [
    'cntrl',
    [
      [0, 0x1f],
      [0x7f, 0x7f],
    ],
  ],
  ['digit', DIGIT],
  ['graph', [R('!', '~')]],
  ['lower', [R('a', 'z')]],
  ['print', [R(' ', '~')]],
  ['punct', [R('!', '/'), R(':', '@'), R('[', '`'), R('{', '~')]],
  ['space', [R('\t', '\r'), R(' ')]],
  ['upper', [R('A', 'Z')]],
  ['word', WORD],
  ['xdigit', [R('0', '9'), R('A', 'F'), R('a', 'f')]],
]);

// Go's unicode.Categories keys. Go's "C" leaves out unassigned code points, unlike \p{C}.
const GO_CATEGORIES = new Set(
  'C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs'.split(
    ' ',
  ),
);

const hex = (cp: number): string => `\\u{${cp.toString(16)}}`;

function rangesClass(ranges: readonly Range[], negated: boolean): string {
  const body = ranges.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('');
  return `[${negated ? '^' : ''}${body}]`;
}

function unicodeClass(name: string, negated: boolean): string {
  if (name === 'Any') return rangesClass([[0, MAX_RUNE]], negated);
  if (name === 'C') return `[${negated ? '^' : ''}\\p{Cc}\\p{Cf}\\p{Co}\\p{Cs}]`;
  const js = GO_CATEGORIES.has(name) ? `\\p{${name}}` : `\\p{sc=${name}}`;
  try {
    new RegExp(js, 'v');
  } catch {
    throw new Re2SyntaxError(`invalid character class range: ${name}`);
  }
  return `[${negated ? '^' : ''}${js}]`;
}

const isAlnum = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

function unhex(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

const isOctal = (c: number | undefined): c is number => c !== undefined && c >= 0x30 && c <= 0x37;

const C_ESCAPES = new Map([
  ['a', 7],
  ['f', 12],
  ['n', 10],
  ['r', 13],
  ['t', 9],
  ['v', 11],
]);

// RE2's \b and \B use ASCII word characters, as JavaScript's do without the `i` flag.
const ASSERTIONS = new Map([
  ['A', '^'],
  ['z', '$'],
  ['b', '\\b'],
  ['B', '\\B'],
]);

class Parser {
  private i = 0;
  private readonly s: number[];

  constructor(src: string) {
    this.s = Array.from(src, ch);
  }

  private peek(offset = 0): number | undefined {
    return this.s[this.i + offset];
  }

  private isAt(c: string, offset = 0): boolean {
    return this.peek(offset) === ch(c);
  }

  /** Parses a whole expression (or a group's body when `inGroup`), returning JS source. */
  sequence(inGroup: boolean): string {
    let out = '';
    // What a following repetition operator would apply to.
    let last: 'none' | 'atom' | 'repeat' = 'none';
    while (this.i < this.s.length) {
      const c = this.s[this.i] as number;
      if (c === ch(')')) {
        if (!inGroup) throw new Re2SyntaxError('unexpected )');
        return out;
      }
      if (c === ch('*') || c === ch('?') || c === ch('+')) {
        if (last === 'none') throw new Re2SyntaxError('missing argument to repetition operator');
        if (last === 'repeat') throw new Re2SyntaxError('invalid nested repetition operator');
        out += String.fromCodePoint(c);
        this.i++;
        last = 'repeat';
        continue;
      }
      if (c === ch('^') || c === ch('$')) {
        out += String.fromCodePoint(c);
        this.i++;
        last = 'none';
        continue;
      }
      if (c === ch('(')) {
        this.i++;
        const body = this.sequence(true);
        if (!this.isAt(')')) throw new Re2SyntaxError('missing closing )');
        this.i++;
        out += `(?:${body})`;
      } else if (c === ch('.')) {
        this.i++;
        out += '[^\\n]';
      } else if (c === ch('[')) {
        out += this.charClass();
      } else if (c === ch('\\')) {
        const escaped = this.escapeOutsideClass();
        if (escaped.kind === 'assertion') {
          out += escaped.js;
          last = 'none';
          continue;
        }
        // An empty \Q\E adds nothing; a repetition after it applies to what came before.
        if (escaped.js === '') continue;
        out += escaped.js;
      } else {
        this.i++;
        out += literal(c);
      }
      last = 'atom';
    }
    if (inGroup) throw new Re2SyntaxError('missing closing )');
    return out;
  }

  private escapeOutsideClass(): { kind: 'assertion' | 'atom'; js: string } {
    const next = this.peek(1);
    const name = next === undefined ? '' : String.fromCodePoint(next);
    const assertion = ASSERTIONS.get(name);
    if (assertion !== undefined) {
      this.i += 2;
      return { kind: 'assertion', js: assertion };
    }
    if (name === 'C') throw new Re2SyntaxError('invalid escape sequence: \\C');
    if (name === 'Q') {
      // Everything up to \E (or the end) is literal, including what compileGlob appended.
      this.i += 2;
      let js = '';
      while (this.i < this.s.length && !(this.isAt('\\') && this.isAt('E', 1))) {
        js += literal(this.s[this.i++] as number);
      }
      if (this.i < this.s.length) this.i += 2;
      // Each literal is its own atom: a repetition applies to the last one only.
      return { kind: 'atom', js };
    }
    const group = this.groupEscape();
    if (group !== undefined) return { kind: 'atom', js: group };
    return { kind: 'atom', js: literal(this.escape()) };
  }

  /** `\pN`, `\p{Name}`, `\d`, `\W`…: a class as JS source, or undefined when not one of those. */
  private groupEscape(): string | undefined {
    if (!this.isAt('\\')) return undefined;
    const kind = this.peek(1);
    if (kind === ch('p') || kind === ch('P')) {
      let negated = kind === ch('P');
      let name: string;
      const first = this.peek(2);
      if (first !== ch('{')) {
        name = first === undefined ? '' : String.fromCodePoint(first);
        this.i += first === undefined ? 2 : 3;
      } else {
        const end = this.s.indexOf(ch('}'), this.i);
        if (end < 0) throw new Re2SyntaxError('invalid character class range');
        name = String.fromCodePoint(...this.s.slice(this.i + 3, end));
        this.i = end + 1;
      }
      if (name.startsWith('^')) {
        negated = !negated;
        name = name.slice(1);
      }
      if (name === '') throw new Re2SyntaxError('invalid character class range');
      return unicodeClass(name, negated);
    }
    if (kind === undefined) return undefined;
    // \D, \S and \W are the complements of \d, \s and \w.
    const perl = PERL_GROUPS.get(String.fromCodePoint(kind).toLowerCase());
    if (perl === undefined) return undefined;
    this.i += 2;
    return rangesClass(perl, kind < ch('a'));
  }

  /** RE2's single-character escapes; `this.i` is at the backslash. */
  private escape(): number {
    this.i++;
    const c = this.s[this.i++];
    if (c === undefined) throw new Re2SyntaxError('trailing backslash at end of expression');
    const bad = (): never => {
      throw new Re2SyntaxError(`invalid escape sequence: \\${String.fromCodePoint(c)}`);
    };
    if (c < 0x80 && !isAlnum(c)) return c;
    if (c >= ch('1') && c <= ch('7') && !isOctal(this.peek())) bad();
    if (c >= ch('0') && c <= ch('7')) {
      // Up to three octal digits; a lone 1-7 would be a backreference and was rejected above.
      let r = c - ch('0');
      for (let k = 1; k < 3 && isOctal(this.peek()); k++)
        r = r * 8 + ((this.s[this.i++] as number) - ch('0'));
      return r;
    }
    if (c === ch('x')) {
      const c2 = this.s[this.i++];
      if (c2 === ch('{')) {
        let r = 0;
        let digits = 0;
        for (;;) {
          const d = this.s[this.i++];
          if (d === undefined) bad();
          if (d === ch('}')) break;
          const v = unhex(d);
          if (v < 0) bad();
          r = r * 16 + v;
          if (r > MAX_RUNE) bad();
          digits++;
        }
        if (digits === 0) bad();
        return r;
      }
      const x = unhex(c2);
      const y = unhex(this.s[this.i++]);
      if (x < 0 || y < 0) bad();
      return x * 16 + y;
    }
    return C_ESCAPES.get(String.fromCodePoint(c)) ?? bad();
  }

  private charClass(): string {
    const start = this.i;
    this.i++;
    let negated = false;
    if (this.isAt('^')) {
      negated = true;
      this.i++;
    }
    const items: string[] = [];
    const ranges: Range[] = [];
    let first = true;
    while (this.i >= this.s.length || !this.isAt(']') || first) {
      first = false;
      const named = this.posixClass();
      if (named !== undefined) {
        items.push(named);
        continue;
      }
      const group = this.groupEscape();
      if (group !== undefined) {
        items.push(group);
        continue;
      }
      const lo = this.classChar(start);
      let hi = lo;
      if (this.s.length - this.i >= 2 && this.isAt('-') && !this.isAt(']', 1)) {
        this.i++;
        hi = this.classChar(start);
        if (hi < lo) throw new Re2SyntaxError('invalid character class range');
      }
      ranges.push([lo, hi]);
    }
    this.i++;
    const body = rangesClass(ranges, false).slice(1, -1) + items.join('');
    return `[${negated ? '^' : ''}${body}]`;
  }

  /** `[:alpha:]` and `[:^alpha:]`; RE2 looks for the closing `:]` anywhere further on. */
  private posixClass(): string | undefined {
    if (!(this.s.length - this.i > 2 && this.isAt('[') && this.isAt(':', 1))) return undefined;
    let end = -1;
    for (let j = this.i + 2; j + 1 < this.s.length; j++) {
      if (this.s[j] === ch(':') && this.s[j + 1] === ch(']')) {
        end = j;
        break;
      }
    }
    if (end < 0) return undefined;
    let name = String.fromCodePoint(...this.s.slice(this.i + 2, end));
    this.i = end + 2;
    const negated = name.startsWith('^');
    if (negated) name = name.slice(1);
    const ranges = POSIX_GROUPS.get(name);
    if (ranges === undefined) throw new Re2SyntaxError(`invalid character class range: [:${name}:]`);
    return rangesClass(ranges, negated);
  }

  private classChar(classStart: number): number {
    const c = this.peek();
    if (c === undefined) {
      throw new Re2SyntaxError(`missing closing ]: ${String.fromCodePoint(...this.s.slice(classStart))}`);
    }
    if (c === ch('\\')) return this.escape();
    this.i++;
    return c;
  }
}

function literal(c: number): string {
  return isAlnum(c) ? String.fromCodePoint(c) : hex(c);
}

/** Compiles RE2 source produced by `compileGlob` into an equivalent JavaScript RegExp. */
export function compileRe2(source: string): RegExp {
  const js = new Parser(source).sequence(false);
  try {
    return new RegExp(js, 'v');
  } catch (err) {
    throw new Re2SyntaxError(err instanceof Error ? err.message : String(err));
  }
}
