/**
 * A trigger's branch pattern, as GitHub's branch filters read it: `*` matches within one path
 * segment (`release/*` matches release/1.0, not release/1.0/hotfix), `**` across segments, `?`
 * one character other than `/`; everything else is literal. `main` matches only main.
 */
export function compileBranchGlob(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

export function branchMatches(glob: string, branch: string): boolean {
  return compileBranchGlob(glob).test(branch);
}
