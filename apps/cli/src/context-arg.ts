/**
 * `kiln build`'s PATH argument read as docker reads it: `-` is stdin, a git URL (docker's
 * IsGitURL: git://, git@, github.com/, or a URL ending in .git with an optional #fragment) is a
 * remote context the service fetches, anything else a directory.
 */
import { CliError, EXIT_USAGE } from './errors.js';

export type ContextArg =
  | { kind: 'dir'; path: string }
  | { kind: 'stdin' }
  /** `url` in the API's form (`…#ref:subdir`); `rewritten` says what became of an SSH URL. */
  | { kind: 'git'; url: string; rewritten?: string };

const GIT_SUFFIX = /\.git(?:#.+)?$/;
const SCP_LIKE = /^git@([^:/]+):(.+)$/;

/** `path#fragment` with `.git` before the fragment, as the API wants http(s) repository URLs. */
function withGitSuffix(url: string): string {
  const hash = url.indexOf('#');
  const base = hash < 0 ? url : url.slice(0, hash);
  const fragment = hash < 0 ? '' : url.slice(hash);
  return `${base.endsWith('.git') ? base : `${base}.git`}${fragment}`;
}

export function parseContextArg(arg: string): ContextArg {
  if (arg === '-') return { kind: 'stdin' };
  // An unset "$DIR" would otherwise build the current directory; docker refuses it too.
  if (arg === '')
    throw new CliError('the context path is empty: name a directory, a git URL or -', EXIT_USAGE);
  if (arg.startsWith('git://')) return { kind: 'git', url: arg };
  const scp = SCP_LIKE.exec(arg);
  if (scp) {
    // The service fetches repositories without credentials, so SSH (which needs a key) cannot
    // work there; the same repository over https does for anything public.
    const url = withGitSuffix(`https://${scp[1]}/${scp[2]}`);
    return {
      kind: 'git',
      url,
      rewritten: `${arg} is an SSH URL, which Kiln cannot fetch (it holds no SSH key): building ${url}`,
    };
  }
  if (arg.startsWith('github.com/')) return { kind: 'git', url: withGitSuffix(`https://${arg}`) };
  if (/^https?:\/\//.test(arg)) {
    if (GIT_SUFFIX.test(arg)) return { kind: 'git', url: arg };
    throw new CliError(
      `${arg}: kiln builds remote git repositories (a URL ending in .git, e.g. https://host/org/repo.git#main:dir), not remote tarballs or Dockerfiles; download it and pipe it in: curl -fsSL URL | kiln build - ...`,
      EXIT_USAGE,
    );
  }
  return { kind: 'dir', path: arg };
}
