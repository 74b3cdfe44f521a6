import {
  AppError,
  type BuildSecrets,
  type BuildSpec,
  checkGitHost,
  type GitContext,
  type GitHostPolicy,
  parseBuildSecrets,
  parseBuildSpec,
  parseGitContext,
} from '@kiln/core';

/**
 * POST /v1/builds with a JSON body: a remote context `{git: "https://host/org/repo.git#ref:subdir"}`
 * beside the usual spec fields (output, file, target, buildArgs, ...). Nothing is uploaded:
 * BuildKit fetches the repository when the build runs. Secret values may come along (`secrets`).
 * The repository's host must pass the operator's policy (`invalid_context` otherwise).
 */
export function parseGitBuildRequest(
  body: unknown,
  hosts: GitHostPolicy,
): {
  spec: BuildSpec;
  git: GitContext;
  secrets: BuildSecrets;
} {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AppError(
      'invalid_request',
      'the JSON body must be an object like {"git": "https://host/org/repo.git#main"}',
    );
  }
  const { git, ...fields } = body as Record<string, unknown>;
  if (git === undefined) {
    throw new AppError(
      'invalid_context',
      'a JSON body names a remote context, {"git": "https://host/org/repo.git#ref"}, or a stored one, {"context": "sha256:…"}; upload a local context as application/x-tar, application/gzip or multipart/form-data',
    );
  }
  const context = parseGitContext(git);
  checkGitHost(context.url, hosts);
  return {
    git: context,
    spec: parseBuildSpec(fields),
    secrets: parseBuildSecrets(fields.secrets),
  };
}
