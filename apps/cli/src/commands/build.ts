/** `kiln build PATH --output type=tar,dest=FILE ...`: docker build, run by Kiln. */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { loadSecrets } from '@kiln/buildkit-client/context';
import { FINAL_STATUSES } from '@kiln/contract';
import { type KilnApi, projectClient } from '../api.js';
import { BUILD_USAGE, parseBuildOptions, serverDest } from '../args.js';
import { ContextDigestCache, contextFingerprint } from '../context-digests.js';
import { contextTarStream, planContext } from '../context-tar.js';
import { downloadArtifact } from '../download.js';
import { CliError, EXIT_INTERRUPTED, EXIT_OK, InterruptedError, messageOf } from '../errors.js';
import { followLogs, waitForFinal } from '../follow.js';
import { type Io, readAll } from '../io.js';
import { createReporter } from '../reporter.js';
import {
  type BuildRequest,
  buildFields,
  buildQuery,
  isRatioRejection,
  submitBuild,
  submitStoredBuild,
} from '../upload.js';

export async function buildCommand(argv: string[], io: Io): Promise<number> {
  const opts = parseBuildOptions(argv, io.env, Boolean(io.stdout.isTTY));
  if (opts === 'help') {
    io.stdout.write(`${BUILD_USAGE}\n`);
    return EXIT_OK;
  }
  const reporter = createReporter(opts.progress, io.stderr);
  const controller = new AbortController();
  const signal = controller.signal;
  const removeInterrupt = io.onInterrupt(() => controller.abort(new InterruptedError()));
  let api: KilnApi | undefined;
  let buildId: string | undefined;
  let finished = false;
  try {
    api = await projectClient(io.env);
    const pushed = opts.output.type === 'image';
    const dest = opts.output.dest === '-' || pushed ? '-' : path.resolve(io.cwd, opts.output.dest);
    // Before the build, not after it: a destination that cannot take a file.
    if (!pushed && dest !== '-' && (await stat(dest).catch(() => undefined))?.isDirectory()) {
      throw new CliError(
        `--output dest "${opts.output.dest}" is a directory: name a file, e.g. ${path.join(opts.output.dest, 'app.tar')}`,
      );
    }

    const secrets = await loadSecrets(opts.secrets, { env: io.env, cwd: io.cwd }).catch((err: unknown) => {
      throw new CliError(messageOf(err));
    });

    const plan = await planContext({
      contextDir: opts.context,
      dockerfile: opts.file,
      cwd: io.cwd,
      readStdin: () => readAll(io.stdin),
    });
    for (const p of plan.skipped)
      reporter.warn(`${p}: Kiln does not take devices and FIFOs in a build context, left out`);
    reporter.context({
      root: plan.root,
      files: plan.files,
      bytes: plan.bytes,
      dockerfile: plan.dockerfile,
      ignoreFile: plan.ignoreFile,
    });
    if (signal.aborted) throw new InterruptedError();

    let read = 0;
    let sentSoFar = 0;
    const started = Date.now();
    const request: BuildRequest = {
      output: {
        type: opts.output.type,
        dest: serverDest(opts.output.dest, opts.output.type),
        attrs: opts.output.attrs,
      },
      file: plan.dockerfile,
      target: opts.target,
      platform: opts.platform,
      network: opts.network,
      noCache: opts.noCache,
      provenance: opts.provenance,
      buildArgs: opts.buildArgs,
      labels: opts.labels,
    };
    const query = buildQuery(request);
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
      return submitBuild(api as KilnApi, {
        query,
        tar,
        signal,
        gzip: gzip ? 6 : false,
        secrets,
        onSent: (bytes) => {
          sentSoFar = bytes;
          reporter.uploadProgress({ read, total: plan.bytes, sent: bytes, compressed: gzip });
        },
      });
    };
    // An unchanged context the server holds for this project is built by digest, not sent again.
    const digests = ContextDigestCache.at(io.env);
    const fingerprint = contextFingerprint(plan);
    const known = await digests.lookup(api.baseUrl, fingerprint);
    let build = known ? await submitStoredBuild(api, known, buildFields(request), secrets) : undefined;
    if (build && known) {
      reporter.uploaded({
        files: plan.files,
        bytes: plan.bytes,
        sent: 0,
        compressed: false,
        ms: Date.now() - started,
        reused: known,
      });
    } else {
      let compressed = true;
      const uploaded = await upload(true).catch((err: unknown) => {
        if (!isRatioRejection(err)) throw err;
        reporter.warn(
          'the context compresses better than the server accepts from gzip: sending it uncompressed',
        );
        compressed = false;
        return upload(false);
      });
      build = uploaded.build;
      reporter.uploaded({
        files: plan.files,
        bytes: plan.bytes,
        sent: uploaded.sent,
        compressed,
        ms: Date.now() - started,
      });
      if (build.context) await digests.remember(api.baseUrl, fingerprint, build.context.digest);
    }
    buildId = build.id;
    reporter.submitted(build);

    try {
      await followLogs(api, build.id, { signal, onLog: (text) => reporter.log(text) });
    } catch (err) {
      if (signal.aborted || !(err instanceof CliError) || err.code !== 'log_stream_lost') throw err;
      reporter.warn(`${err.message}; waiting for the build to finish`);
    }
    const done = await waitForFinal(api, build.id, FINAL_STATUSES, { signal, timeoutMs: 60_000 });
    finished = true;
    reporter.finished(done);
    if (done.status !== 'succeeded') {
      throw new CliError(
        done.error?.message || `build ${done.id} ${done.status}`,
        1,
        done.error?.code ?? done.status,
      );
    }
    if (done.image) {
      // What docker's --push leaves to look up: the names and the digest the registry holds.
      for (const name of done.image.name.split(',')) io.stdout.write(`${name}@${done.image.digest}\n`);
      return EXIT_OK;
    }
    if (!done.artifact) throw new CliError(`build ${done.id} succeeded but has no artifact`);
    if (!done.artifact.digest) reporter.warn('the build recorded no digest: the download cannot be verified');

    const downloadStarted = Date.now();
    const got = await downloadArtifact({
      url: done.artifact.url,
      digest: done.artifact.digest,
      size: done.artifact.size,
      dest,
      stdout: io.stdout,
      signal,
      onProgress: (bytes, total) => reporter.downloadProgress({ bytes, total }),
    });
    reporter.downloaded({
      dest: opts.output.dest === '-' ? 'stdout' : opts.output.dest,
      size: got.size,
      digest: got.digest,
      ms: Date.now() - downloadStarted,
    });
    return EXIT_OK;
  } catch (err) {
    if (signal.aborted) {
      if (api && buildId && !finished) {
        reporter.canceling(buildId);
        try {
          await api.cancelBuild(buildId, AbortSignal.timeout(10_000));
        } catch (cancelErr) {
          reporter.warn(`could not cancel build ${buildId}: ${messageOf(cancelErr)}`);
        }
      }
      reporter.error(
        new InterruptedError(buildId && !finished ? `interrupted: build ${buildId} canceled` : 'interrupted'),
      );
      return EXIT_INTERRUPTED;
    }
    const e = err instanceof CliError ? err : new CliError(messageOf(err));
    reporter.error(e);
    return e.exitCode;
  } finally {
    removeInterrupt();
    reporter.close();
  }
}
