/**
 * A trigger's branch pattern, as GitHub's branch filters read it: `*` matches within one path
 * segment (`release/*` matches release/1.0, not release/1.0/hotfix), `**` across segments, `?`
 * one character other than `/`; everything else is literal. `main` matches only main.
 *
 * Matching never uses a regular expression: a pushed ref is attacker-chosen text, and a
 * backtracking engine takes exponential time on globs like `**a**a**a**c`. This runs the glob as
 * a set of positions (an NFA), so it costs at most O(glob length × branch length).
 */

/** Longest glob a trigger may store (bytes; the glob is printable ASCII). */
export const MAX_BRANCH_GLOB_LENGTH = 255;

type Token = { kind: 'literal'; char: string } | { kind: 'one' } | { kind: 'segment' } | { kind: 'any' };

function tokenize(glob: string): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*' && glob[i + 1] === '*') {
      tokens.push({ kind: 'any' });
      i++;
    } else if (c === '*') tokens.push({ kind: 'segment' });
    else if (c === '?') tokens.push({ kind: 'one' });
    else tokens.push({ kind: 'literal', char: c });
  }
  return tokens;
}

const isStar = (t: Token | undefined) => t?.kind === 'segment' || t?.kind === 'any';

/** Adds to `states` every position reachable by letting stars match nothing (positions only grow). */
function skipEmptyStars(tokens: Token[], states: boolean[]): void {
  for (let i = 0; i < tokens.length; i++) if (states[i] && isStar(tokens[i])) states[i + 1] = true;
}

export function branchMatches(glob: string, branch: string): boolean {
  const tokens = tokenize(glob);
  // states[i]: the branch read so far can be matched by tokens[0..i).
  let states = new Array<boolean>(tokens.length + 1).fill(false);
  states[0] = true;
  skipEmptyStars(tokens, states);
  // By UTF-16 code unit, as the regular expression this replaced read it.
  for (let k = 0; k < branch.length; k++) {
    const c = branch[k] as string;
    const next = new Array<boolean>(tokens.length + 1).fill(false);
    let alive = false;
    for (let i = 0; i < tokens.length; i++) {
      if (!states[i]) continue;
      const token = tokens[i] as Token;
      const fits = token.kind === 'any' || (token.kind === 'literal' ? token.char === c : c !== '/');
      if (!fits) continue;
      // A star stays where it is (it may match more); anything else moves past its one character.
      next[isStar(token) ? i : i + 1] = true;
      alive = true;
    }
    if (!alive) return false;
    skipEmptyStars(tokens, next);
    states = next;
  }
  return states[tokens.length] === true;
}
