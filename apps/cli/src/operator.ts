/**
 * The operator's client: the server URL as every command finds it, with KILN_OPERATOR_TOKEN
 * (`--operator-token` or the environment). Never the project token and never saved: it rules
 * every project, so it stays where the operator keeps it.
 */
import { type HintFor, KilnApi } from './api.js';
import { checkToken, loadConfig } from './config.js';
import { UsageError } from './errors.js';

const OPERATOR_HINT =
  "hint: pass --operator-token, or set KILN_OPERATOR_TOKEN, to the server's KILN_OPERATOR_TOKEN";

export async function operatorClient(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): Promise<KilnApi> {
  const token = flag || env.KILN_OPERATOR_TOKEN;
  if (!token) {
    throw new UsageError('the operator token is required: pass --operator-token or set KILN_OPERATOR_TOKEN');
  }
  const { url } = await loadConfig(env);
  const checked = checkToken(token, flag ? '--operator-token' : 'KILN_OPERATOR_TOKEN', OPERATOR_HINT);
  // Without KILN_OPERATOR_TOKEN of its own the server hides these routes: a 404 naming the route.
  const hintFor: HintFor = (err) =>
    err.code === 'unauthorized'
      ? OPERATOR_HINT
      : err.status === 404 && err.message.startsWith('no route ')
        ? `hint: Kiln at ${url} has no operator routes: start it with KILN_OPERATOR_TOKEN set`
        : undefined;
  return new KilnApi(url, checked, hintFor);
}
