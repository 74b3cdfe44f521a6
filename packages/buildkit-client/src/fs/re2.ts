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

type Assertion = '^' | '$' | '\\b' | '\\B';
type RepeatOp = '*' | '?' | '+';

/** The parsed expression: `char` matches one code point (`js` is its JavaScript source). */
type Node =
  | { kind: 'char'; js: string }
  | { kind: 'group'; body: Node[] }
  | { kind: 'repeat'; op: RepeatOp; node: Node }
  | { kind: 'assert'; js: Assertion };

// RE2's \b and \B use ASCII word characters, as JavaScript's do without the `i` flag.
const ASSERTIONS = new Map<string, Assertion>([
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

  /** Parses a whole expression (or a group's body when `inGroup`). */
  sequence(inGroup: boolean): Node[] {
    const out: Node[] = [];
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
        const node = out.pop() as Node;
        out.push({ kind: 'repeat', op: String.fromCodePoint(c) as RepeatOp, node });
        this.i++;
        last = 'repeat';
        continue;
      }
      if (c === ch('^') || c === ch('$')) {
        out.push({ kind: 'assert', js: String.fromCodePoint(c) as Assertion });
        this.i++;
        last = 'none';
        continue;
      }
      if (c === ch('(')) {
        this.i++;
        const body = this.sequence(true);
        if (!this.isAt(')')) throw new Re2SyntaxError('missing closing )');
        this.i++;
        out.push({ kind: 'group', body });
      } else if (c === ch('.')) {
        this.i++;
        out.push({ kind: 'char', js: '[^\\n]' });
      } else if (c === ch('[')) {
        out.push({ kind: 'char', js: this.charClass() });
      } else if (c === ch('\\')) {
        const escaped = this.escapeOutsideClass();
        if (escaped.kind === 'assertion') {
          out.push({ kind: 'assert', js: escaped.js });
          last = 'none';
          continue;
        }
        // An empty \Q\E adds nothing; a repetition after it applies to what came before.
        if (escaped.chars.length === 0) continue;
        // Each literal is its own atom: a repetition applies to the last one only.
        for (const js of escaped.chars) out.push({ kind: 'char', js });
      } else {
        this.i++;
        out.push({ kind: 'char', js: literal(c) });
      }
      last = 'atom';
    }
    if (inGroup) throw new Re2SyntaxError('missing closing )');
    return out;
  }

  private escapeOutsideClass(): { kind: 'assertion'; js: Assertion } | { kind: 'atoms'; chars: string[] } {
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
      const chars: string[] = [];
      while (this.i < this.s.length && !(this.isAt('\\') && this.isAt('E', 1))) {
        chars.push(literal(this.s[this.i++] as number));
      }
      if (this.i < this.s.length) this.i += 2;
      return { kind: 'atoms', chars };
    }
    const group = this.groupEscape();
    if (group !== undefined) return { kind: 'atoms', chars: [group] };
    return { kind: 'atoms', chars: [literal(this.escape())] };
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

function toJs(nodes: readonly Node[]): string {
  return nodes
    .map((n) => {
      if (n.kind === 'group') return `(?:${toJs(n.body)})`;
      if (n.kind === 'repeat') return `${toJs([n.node])}${n.op}`;
      return n.js;
    })
    .join('');
}

function unboundedRepeats(nodes: readonly Node[]): number {
  let count = 0;
  for (const n of nodes) {
    if (n.kind === 'group') count += unboundedRepeats(n.body);
    else if (n.kind === 'repeat') count += (n.op === '?' ? 0 : 1) + unboundedRepeats([n.node]);
  }
  return count;
}

/**
 * Compiles RE2 source produced by `compileGlob` into a test with RE2's meaning and its linear
 * time. The patterns are the tenant's (.dockerignore), and a JavaScript RegExp backtracks: with
 * two or more unbounded repetitions (`a*a*a*a*b`, 19 characters) one test can take minutes and
 * holds the event loop all along. Those run on `pikeVm`; the rest, which cannot blow up beyond
 * a path's length squared, on a RegExp.
 */
export function compileRe2(
  source: string,
  /** `auto` as above; the others force one engine (the tests compare them). */
  engine: 'auto' | 'regexp' | 'vm' = 'auto',
): (input: string) => boolean {
  const nodes = new Parser(source).sequence(false);
  // Compiled whichever engine runs: it is what refuses what RE2 would refuse and JavaScript too.
  let re: RegExp;
  try {
    re = new RegExp(toJs(nodes), 'v');
  } catch (err) {
    throw new Re2SyntaxError(err instanceof Error ? err.message : String(err));
  }
  if (engine === 'vm' || (engine === 'auto' && unboundedRepeats(nodes) >= 2)) return pikeVm(nodes);
  return (input) => re.test(input);
}

type Instruction =
  | { op: 'char'; test: (code: number) => boolean }
  | { op: 'split'; x: number; y: number }
  | { op: 'jmp'; x: number }
  | { op: 'assert'; kind: Assertion }
  | { op: 'match' };

/** The code point a `char` node's source stands for, when it is a plain literal. */
function literalOf(js: string): number | undefined {
  if (/^[0-9A-Za-z]$/.test(js)) return ch(js);
  const escaped = /^\\u\{([0-9a-f]+)\}$/.exec(js);
  return escaped ? Number.parseInt(escaped[1] as string, 16) : undefined;
}

/** One code point's test: plain comparisons for the common atoms, a RegExp for real classes. */
function charTest(js: string): (code: number) => boolean {
  // `[^/]` from a glob's `*` and `?`, as the class parser writes it.
  if (js === '[^\\u{2f}]') return (code) => code !== 0x2f;
  if (js === '[^\\n]') return (code) => code !== 0x0a;
  const literal = literalOf(js);
  if (literal !== undefined) return (code) => code === literal;
  const re = new RegExp(`^(?:${js})$`, 'v');
  return (code) => re.test(String.fromCodePoint(code));
}

/**
 * What any match must contain: the runs of literals at the top level (outside groups and
 * repetitions), and the one right before a final `$`, which it must end with. Most paths fail
 * these plain string checks (`**` + `/*.log` needs `.log` at the end), and skip the simulation.
 */
function requiredText(nodes: readonly Node[]): { runs: string[]; suffix: string } {
  const runs: string[] = [];
  let run = '';
  for (const n of nodes) {
    const literal = n.kind === 'char' ? literalOf(n.js) : undefined;
    if (literal !== undefined) {
      run += String.fromCodePoint(literal);
      continue;
    }
    if (run !== '') runs.push(run);
    run = '';
  }
  if (run !== '') runs.push(run);
  const last = nodes.at(-1);
  let suffix = '';
  if (last?.kind === 'assert' && last.js === '$') {
    for (let k = nodes.length - 2; k >= 0; k--) {
      const n = nodes[k] as Node;
      const literal = n.kind === 'char' ? literalOf(n.js) : undefined;
      if (literal === undefined) break;
      suffix = String.fromCodePoint(literal) + suffix;
    }
  }
  return { runs, suffix };
}

function emit(nodes: readonly Node[], prog: Instruction[]): void {
  for (const n of nodes) {
    if (n.kind === 'char') prog.push({ op: 'char', test: charTest(n.js) });
    else if (n.kind === 'assert') prog.push({ op: 'assert', kind: n.js });
    else if (n.kind === 'group') emit(n.body, prog);
    else if (n.op === '+') {
      const start = prog.length;
      emit([n.node], prog);
      prog.push({ op: 'split', x: start, y: prog.length + 1 });
    } else {
      // `?` and `*` split before the atom; where the split's second branch goes is known after it.
      const at = prog.push({ op: 'jmp', x: 0 }) - 1;
      emit([n.node], prog);
      if (n.op === '*') prog.push({ op: 'jmp', x: at });
      prog[at] = { op: 'split', x: at + 1, y: prog.length };
    }
  }
}

const isWordCode = (code: number): boolean => code === 0x5f || (code >= 0 && code < 0x80 && isAlnum(code));

/**
 * Thompson's simulation of the expression (as RE2 and Go run it when they must): every
 * position advances all live states at once, so a test costs at most the input's length times
 * the program's. `RegExp.test` semantics: a match anywhere (the sources are anchored anyway).
 */
function pikeVm(nodes: readonly Node[]): (input: string) => boolean {
  const prog: Instruction[] = [];
  emit(nodes, prog);
  prog.push({ op: 'match' });
  // Reused by every test: a state is on this position's list when its mark is this step.
  const marks = new Float64Array(prog.length).fill(-1);
  let step = 0;
  const current = new Int32Array(prog.length);
  const next = new Int32Array(prog.length);
  const pending: number[] = [];
  const { runs, suffix } = requiredText(nodes);
  return (input) => {
    if (!input.endsWith(suffix) || runs.some((run) => !input.includes(run))) return false;
    let matched = false;
    let count = 0;
    let list = current;
    // The position threads are added at (in code units), and the code points either side of it
    // (-1: none), for the assertions.
    let pos = 0;
    let before = -1;
    let at = input.length > 0 ? (input.codePointAt(0) as number) : -1;
    const holds = (kind: Assertion): boolean => {
      if (kind === '^') return pos === 0;
      if (kind === '$') return pos === input.length;
      const boundary = isWordCode(before) !== isWordCode(at);
      return kind === '\\b' ? boundary : !boundary;
    };
    // Follows the empty moves from `start` with a stack of its own: a long pattern's chain of
    // splits would overflow the call stack.
    const add = (start: number): void => {
      pending.push(start);
      while (pending.length > 0) {
        const pc = pending.pop() as number;
        if (marks[pc] === step) continue;
        marks[pc] = step;
        const ins = prog[pc] as Instruction;
        if (ins.op === 'jmp') pending.push(ins.x);
        else if (ins.op === 'split') pending.push(ins.y, ins.x);
        else if (ins.op === 'assert') {
          if (holds(ins.kind)) pending.push(pc + 1);
        } else if (ins.op === 'match') matched = true;
        else list[count++] = pc;
      }
    };
    step++;
    add(0);
    while (pos < input.length && !matched) {
      const code = at;
      pos += code > 0xffff ? 2 : 1;
      before = code;
      at = pos < input.length ? (input.codePointAt(pos) as number) : -1;
      const live = count;
      const from = list;
      list = from === current ? next : current;
      count = 0;
      step++;
      for (let k = 0; k < live; k++) {
        const pc = from[k] as number;
        if ((prog[pc] as Instruction & { op: 'char' }).test(code)) add(pc + 1);
      }
      // Unanchored, as RegExp.test: a match may also start further on.
      add(0);
    }
    return matched;
  };
}
