/**
 * Creates the build from the context `kiln build` was given: a directory (walked, tarred,
 * gzipped on the way, or built by digest when unchanged), stdin (an archive streamed as it
 * comes, or a Dockerfile with an empty context), or a git URL (nothing sent: BuildKit fetches it).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { BuildView, KilnApi } from './api.js';
import type { ContextArg } from './context-arg.js';
import { ContextDigestCache, contextFingerprint } from './context-digests.js';
import { type ContextPlan, contextTarStream, planContext } from './context-tar.js';
import { InterruptedError } from './errors.js';
import { type Io, readAll } from './io.js';
import type { Reporter } from './reporter.js';
import { readStdinContext } from './stdin-context.js';
import {
  type BuildRequest,
  buildFields,
  isRatioRejection,
  submitBuild,
  submitGitBuild,
  submitStoredBuild,
} from './upload.js';

export interface SubmitOptions {
  api: KilnApi;
  /** The spec; `file` is decided here, from the context. */
  spec: Omit<BuildRequest, 'file'>;
  /** `-f` as given. */
  file: string | undefined;
  secrets: Record<string, Buffer> | undefined;
  signal: AbortSignal;
  reporter: Reporter;
  io: Io;
}

const DEFAULT_DOCKERFILE = 'Dockerfile';

export async function submitContext(context: ContextArg, o: SubmitOptions): Promise<BuildView> {
  switch (context.kind) {
    case 'git': {
      if (context.rewritten) o.reporter.warn(context.rewritten);
      const request = { ...o.spec, file: o.file ?? DEFAULT_DOCKERFILE };
      return submitGitBuild(o.api, context.url, buildFields(request), o.secrets, o.signal);
    }
    case 'stdin':
      return submitStdin(o);
    case 'dir': {
      const plan = await planContext({
        contextDir: context.path,
        dockerfile: o.file,
        cwd: o.io.cwd,
        readStdin: () => readAll(o.io.stdin, o.signal),
        signal: o.signal,
      });
      return submitPlan(plan, o, ContextDigestCache.at(o.io.env));
    }
  }
}

async function submitStdin(o: SubmitOptions): Promise<BuildView> {
  const input = await readStdinContext(o.io.stdin, o.signal);
  if (input.kind === 'archive') {
    // Sent as it comes: stdin cannot be read twice, so there is no uncompressed retry.
    const started = Date.now();
    const { build, sent } = await submitBuild(o.api, {
      request: { ...o.spec, file: o.file ?? DEFAULT_DOCKERFILE },
      tar: input.body,
      signal: o.signal,
      gzip: false,
      gzipped: input.gzip,
      secrets: o.secrets,
    });
    o.reporter.uploaded({
      files: undefined,
      bytes: sent,
      sent,
      compressed: input.gzip,
      ms: Date.now() - started,
    });
    return build;
  }
  // A Dockerfile alone: docker builds it with an empty context, and so does this.
  const empty = await mkdtemp(path.join(os.tmpdir(), 'kiln-empty-context-'));
  try {
    const plan = await planContext({
      contextDir: empty,
      dockerfile: '-',
      cwd: o.io.cwd,
      readStdin: async () => input.data,
      signal: o.signal,
    });
    return await submitPlan(plan, o, undefined);
  } finally {
    await rm(empty, { recursive: true, force: true });
  }
}

/** A planned local context: by digest when `digests` knows it unchanged, else uploaded. */
async function submitPlan(
  plan: ContextPlan,
  o: SubmitOptions,
  digests: ContextDigestCache | undefined,
): Promise<BuildView> {
  const { api, reporter, signal } = o;
  for (const p of plan.skipped)
    reporter.warn(`${p}: Kiln does not take devices and FIFOs in a build context, left out`);
  for (const w of plan.warnings) reporter.warn(w);
  reporter.context({
    root: plan.root,
    files: plan.files,
    bytes: plan.bytes,
    dockerfile: plan.dockerfile,
    ignoreFile: plan.ignoreFile,
  });
  if (signal.aborted) throw new InterruptedError();

  const request: BuildRequest = { ...o.spec, file: plan.dockerfile };
  const started = Date.now();
  const fingerprint = digests ? contextFingerprint(plan) : undefined;
  const known = digests && fingerprint ? await digests.lookup(api.baseUrl, fingerprint) : undefined;
  const stored = known
    ? await submitStoredBuild(api, known, buildFields(request), o.secrets, o.signal)
    : undefined;
  if (stored && known) {
    reporter.uploaded({
      files: plan.files,
      bytes: plan.bytes,
      sent: 0,
      compressed: false,
      ms: Date.now() - started,
      reused: known,
    });
    return stored;
  }

  let read = 0;
  let sentSoFar = 0;
  const upload = (gzip: boolean) => {
    read = 0;
    sentSoFar = 0;
    const tar = contextTarStream(plan, {
      onProgress: (p) => {
        read = p.bytes;
        reporter.uploadProgress({ read, total: plan.bytes, sent: sentSoFar, compressed: gzip });
      },
      onWarning: (m) => reporter.warn(m),
    });
    return submitBuild(api, {
      request,
      tar,
      signal,
      gzip: gzip ? 6 : false,
      secrets: o.secrets,
      onSent: (bytes) => {
        sentSoFar = bytes;
        reporter.uploadProgress({ read, total: plan.bytes, sent: bytes, compressed: gzip });
      },
    });
  };
  let compressed = true;
  const uploaded = await upload(true).catch((err: unknown) => {
    if (!isRatioRejection(err)) throw err;
    reporter.warn('the context compresses better than the server accepts from gzip: sending it uncompressed');
    compressed = false;
    return upload(false);
  });
  reporter.uploaded({
    files: plan.files,
    bytes: plan.bytes,
    sent: uploaded.sent,
    compressed,
    ms: Date.now() - started,
  });
  if (digests && fingerprint && uploaded.build.context) {
    await digests.remember(api.baseUrl, fingerprint, uploaded.build.context.digest);
  }
  return uploaded.build;
}
