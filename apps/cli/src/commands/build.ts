/** `kiln build PATH|URL|- --output type=tar,dest=FILE ...`: docker build, run by Kiln. */
import path from 'node:path';
import { loadSecrets } from '@kiln/buildkit-client/context';
import { type KilnApi, projectClient } from '../api.js';
import { BUILD_USAGE, buildSpec, parseBuildOptions } from '../args.js';
import { destinationOf, downloadArtifact } from '../download.js';
import {
  BrokenPipeError,
  CliError,
  EXIT_OK,
  exitCodeForBuildError,
  interruptionOf,
  messageOf,
} from '../errors.js';
import { followUntilFinal } from '../follow.js';
import { textWriter } from '../format.js';
import type { Io } from '../io.js';
import { createReporter } from '../reporter.js';
import { submitContext } from '../submit-context.js';

export async function buildCommand(argv: string[], io: Io): Promise<number> {
  const opts = parseBuildOptions(argv, io.env, Boolean(io.stdout.isTTY));
  if (opts === 'help') {
    io.stdout.write(`${BUILD_USAGE}\n`);
    return EXIT_OK;
  }
  const reporter = createReporter(opts.progress, io.stderr);
  const controller = new AbortController();
  const signal = controller.signal;
  const removeInterrupt = io.onInterrupt((reason) => controller.abort(reason));
  let api: KilnApi | undefined;
  let buildId: string | undefined;
  let finished = false;
  try {
    api = await projectClient(io.env);
    const pushed = opts.output.type === 'image';
    const dest = opts.output.dest === '-' || pushed ? '-' : path.resolve(io.cwd, opts.output.dest);
    // Refused before the build when it could not take the artifact (asked again at the download).
    if (!pushed && dest !== '-') await destinationOf(dest, opts.output.dest);

    const secrets = await loadSecrets(opts.secrets, { env: io.env, cwd: io.cwd }).catch((err: unknown) => {
      throw new CliError(messageOf(err));
    });

    const build = await submitContext(opts.context, {
      api,
      spec: buildSpec(opts),
      file: opts.file,
      secrets,
      signal,
      reporter,
      io,
    });
    buildId = build.id;
    reporter.submitted(build);

    const done = await followUntilFinal(api, build.id, {
      signal,
      onLog: (text) => reporter.log(text),
      onLost: (err) => reporter.warn(`${err.message}; waiting for the build to finish`),
    });
    finished = true;
    reporter.finished(done);
    if (done.status !== 'succeeded') {
      throw new CliError(
        done.error?.message || `build ${done.id} ${done.status}`,
        exitCodeForBuildError(done.error?.code),
        done.error?.code ?? done.status,
      );
    }
    if (done.image) {
      // What docker's --push leaves to look up: the names and the digest the registry holds.
      const say = textWriter(io.stdout);
      for (const name of done.image.name.split(',')) say(`${name}@${done.image.digest}\n`);
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
      const reason = interruptionOf(signal);
      if (api && buildId && !finished) {
        reporter.canceling(buildId);
        try {
          await api.cancelBuild(buildId, AbortSignal.timeout(10_000));
        } catch (cancelErr) {
          reporter.warn(`could not cancel build ${buildId}: ${messageOf(cancelErr)}`);
        }
      }
      // A closed stdout or stderr ends quietly, as SIGPIPE would have.
      if (!(reason instanceof BrokenPipeError)) {
        const canceled = buildId && !finished ? `: build ${buildId} canceled` : '';
        reporter.error(new CliError(`${reason.message}${canceled}`, reason.exitCode));
      }
      return reason.exitCode;
    }
    const e = err instanceof CliError ? err : new CliError(messageOf(err));
    reporter.error(e);
    return e.exitCode;
  } finally {
    removeInterrupt();
    reporter.close();
  }
}
