// A real Kiln for the CLI's integration tests (API + worker in this process on the services
// `npm test` provides), from the shared test harness.
import { startTestKiln } from '../../../test/support/kiln.js';

export interface RunningKiln {
  url: string;
  token: string;
  dataDir: string;
  /** A token of another (or the same) project. */
  newToken(project: string): Promise<string>;
  stop(): Promise<void>;
}

/** The server's KILN_OPERATOR_TOKEN, for kiln projects. */
export const OPERATOR_TOKEN = 'o'.repeat(40);

export function dockerSocket(): string {
  const socket = process.env.KILN_TEST_DOCKER_SOCK;
  if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
  return socket;
}

export async function startKiln(): Promise<RunningKiln> {
  dockerSocket();
  return startTestKiln({
    worker: true,
    project: 'cli',
    env: { KILN_BUILD_ATTEMPTS: '2', KILN_OPERATOR_TOKEN: OPERATOR_TOKEN },
  });
}
