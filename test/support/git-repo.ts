// A real git repository for tests, served on loopback both by `git daemon` (git://) and by
// `git http-backend` (smart HTTP, as GitHub and GitLab serve) behind a Node HTTP server. The
// Docker daemons under test run on the host's network, so BuildKit can fetch from either.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../packages/core/test-support/services.js';

export interface GitRepo {
  /** git://127.0.0.1:<port>/<name>.git */
  gitUrl: string;
  /** http://127.0.0.1:<port>/<name>.git */
  httpUrl: string;
  /** Writes the files, commits them on `branch` and pushes; returns the commit id. */
  commit(files: Record<string, string>, branch?: string): string;
  stop(): Promise<void>;
}

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Kiln Test',
  GIT_AUTHOR_EMAIL: 'test@kiln.invalid',
  GIT_COMMITTER_NAME: 'Kiln Test',
  GIT_COMMITTER_EMAIL: 'test@kiln.invalid',
  GIT_CONFIG_NOSYSTEM: '1',
};

export async function startGitRepo(name = 'app'): Promise<GitRepo> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-git-'));
  const served = path.join(root, 'srv');
  const bare = path.join(served, `${name}.git`);
  const work = path.join(root, 'work');
  const git = (cwd: string, ...args: string[]) =>
    execFileSync('git', args, { cwd, env: GIT_ENV, encoding: 'utf8' }).trim();
  await fs.mkdir(served);
  git(root, 'init', '--quiet', '--bare', '-b', 'main', bare);
  git(root, 'init', '--quiet', '-b', 'main', work);
  git(work, 'remote', 'add', 'origin', bare);

  const daemonPort = await freePort();
  // The daemon binary itself: `git daemon` would leave it running as a child when stopped.
  const daemonBin = path.join(
    execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim(),
    'git-daemon',
  );
  const daemon = spawn(
    daemonBin,
    [
      '--export-all',
      '--reuseaddr',
      '--listen=127.0.0.1',
      `--port=${daemonPort}`,
      `--base-path=${served}`,
      served,
    ],
    { stdio: 'ignore' },
  );
  const web = http.createServer((req, res) => httpBackend(served, req, res));
  const webPort = await freePort();
  await new Promise<void>((resolve) => web.listen(webPort, '127.0.0.1', resolve));

  const repo: GitRepo = {
    gitUrl: `git://127.0.0.1:${daemonPort}/${name}.git`,
    httpUrl: `http://127.0.0.1:${webPort}/${name}.git`,
    commit(files, branch = 'main') {
      const current = git(work, 'symbolic-ref', '--short', 'HEAD');
      if (current !== branch) git(work, 'checkout', '--quiet', '-B', branch);
      for (const [file, content] of Object.entries(files)) {
        mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
        writeFileSync(path.join(work, file), content);
      }
      git(work, 'add', '-A');
      git(work, 'commit', '--quiet', '-m', `commit on ${branch}`);
      git(work, 'push', '--quiet', 'origin', branch);
      return git(work, 'rev-parse', 'HEAD');
    },
    async stop() {
      await stopChild(daemon);
      web.closeAllConnections();
      await new Promise<void>((resolve) => web.close(() => resolve()));
      await fs.rm(root, { recursive: true, force: true });
    },
  };
  await waitForDaemon(repo.gitUrl, daemon);
  return repo;
}

async function waitForDaemon(url: string, daemon: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (daemon.exitCode !== null) throw new Error(`git daemon exited (${daemon.exitCode})`);
    try {
      execFileSync('git', ['ls-remote', url], { stdio: 'ignore', timeout: 5000 });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`git daemon at ${url} did not answer`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** `git http-backend` as a CGI program: request body in, "Status:"/headers + body out. */
function httpBackend(root: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const cgi = spawn('git', ['http-backend'], {
    env: {
      ...GIT_ENV,
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
      ...(req.headers['git-protocol'] ? { GIT_PROTOCOL: String(req.headers['git-protocol']) } : {}),
      REMOTE_ADDR: '127.0.0.1',
    },
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  req.pipe(cgi.stdin);
  let head = Buffer.alloc(0);
  let headersDone = false;
  cgi.stdout.on('data', (chunk: Buffer) => {
    if (headersDone) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    headersDone = true;
    let status = 200;
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const key = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (key.toLowerCase() === 'status') status = Number.parseInt(value, 10);
      else res.setHeader(key, value);
    }
    res.writeHead(status);
    res.write(head.subarray(end + 4));
  });
  cgi.on('close', () => {
    if (!headersDone) res.writeHead(502);
    res.end();
  });
}
