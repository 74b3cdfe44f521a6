/**
 * A project's registry credentials: the password or token encrypted at rest (AES-256-GCM, bound
 * to the project and host, so a ciphertext copied to another row does not decrypt), handed in
 * clear only to the worker, which serves them to BuildKit over the build's session.
 */
import { open, seal } from './aead.js';
import { type CredentialsKeys, openUnderAny } from './credentials-keys.js';
import type { PrismaClient } from './db/index.js';
import { AppError } from './errors.js';
import type { Network } from './net/address.js';
import { refusedHost } from './net/host.js';
import { hostMatches } from './net/host-patterns.js';

const VERSION = 'v1';

const aad = (projectId: string, host: string) => Buffer.from(`${projectId}\0${host}`);

export function encryptSecret(key: Buffer, projectId: string, host: string, secret: string): string {
  const { iv, tag, body } = seal(key, aad(projectId, host), Buffer.from(secret, 'utf8'));
  return [VERSION, ...[iv, tag, body].map((p) => p.toString('base64'))].join(':');
}

/** Throws when the ciphertext is not this key's, or not for this project and host. */
export function decryptSecret(key: Buffer, projectId: string, host: string, stored: string): string {
  const [version, iv, tag, body] = stored.split(':');
  if (version !== VERSION || !iv || !tag || body === undefined) throw new Error('unknown credential format');
  const [ivBytes, tagBytes, bodyBytes] = [iv, tag, body].map((p) => Buffer.from(p, 'base64')) as [
    Buffer,
    Buffer,
    Buffer,
  ];
  return open(key, aad(projectId, host), { iv: ivBytes, tag: tagBytes, body: bodyBytes }).toString('utf8');
}

/** The secret under whichever of the keys sealed it; undefined when none did. */
function openStored(keys: CredentialsKeys, projectId: string, host: string, stored: string) {
  return openUnderAny(keys, (key) => {
    try {
      return decryptSecret(key, projectId, host, stored);
    } catch {
      return undefined;
    }
  });
}

/**
 * Docker Hub is asked for as `registry-1.docker.io` by BuildKit; people write `docker.io`.
 * Other hosts are kept as written, lowercase, with their port.
 */
export function normalizeRegistryHost(raw: string): string {
  const host = raw.trim().toLowerCase().replace(/\/+$/, '');
  const port = /:(\d{1,5})$/.exec(host)?.[1];
  const badPort = port !== undefined && (Number(port) < 1 || Number(port) > 65535);
  if (!/^([a-z0-9.-]+|\[[0-9a-f:]+\])(:\d{1,5})?$/.test(host) || host.length > 255 || badPort) {
    throw new AppError(
      'invalid_request',
      `"${raw.slice(0, 100)}" is not a registry host like registry.example:5000`,
    );
  }
  return host === 'docker.io' || host === 'index.docker.io' ? 'registry-1.docker.io' : host;
}

/** Which registries BuildKit may push to (KILN_REGISTRY_* settings), judged on the host as written. */
export interface RegistryPolicy {
  /** Empty: every host not denied. */
  allowedHosts: readonly string[];
  deniedHosts: readonly string[];
  /** Special-purpose addresses (loopback, private, ...) allowed as literal hosts. */
  allowedNetworks: readonly Network[];
}

/** Docker Hub's names, each pushed to the same registry: a policy naming one names them all. */
const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** Throws `invalid_spec` naming the host when the policy refuses a push target. */
export function checkRegistryHost(hostWithPort: string, policy: RegistryPolicy): void {
  const host = hostWithPort.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  const names = DOCKER_HUB.includes(host.toLowerCase()) ? DOCKER_HUB : [host];
  const refuse = (why: string) => {
    throw new AppError('invalid_spec', `output name: the registry ${hostWithPort} ${why}`);
  };
  if (names.some((n) => hostMatches(n, policy.deniedHosts))) refuse('is denied by this Kiln');
  if (policy.allowedHosts.length > 0 && !names.some((n) => hostMatches(n, policy.allowedHosts))) {
    refuse('is not among the registries this Kiln pushes to');
  }
  const why = refusedHost(host, policy.allowedNetworks);
  if (why) refuse(`is ${why}; this Kiln does not push to such addresses (KILN_REGISTRY_ALLOWED_NETWORKS)`);
}

export interface RegistryCredentialView {
  host: string;
  username: string;
  updatedAt: Date;
  /** False when no credentials key of this Kiln opens it (the key changed): builds go without it. */
  usable: boolean;
}

/** Advisory lock class of a project's login puts ("KRCL"). */
const LOGINS_LOCK_CLASS = 0x4b52434c;

/** The only code that reads or writes RegistryCredential rows. */
export class RegistryCredentialStore {
  constructor(
    private readonly prisma: PrismaClient,
    /** Undefined when the operator set no key: credentials can be neither stored nor used. */
    private readonly keys: CredentialsKeys | undefined,
  ) {}

  private requireKey(): Buffer {
    if (!this.keys) {
      throw new AppError(
        'conflict',
        'registry credentials need KILN_CREDENTIALS_KEY (or KILN_SIGNING_KEY) set on this Kiln',
      );
    }
    return this.keys.current;
  }

  /**
   * Sets the project's login to `host`; a project holds at most `maxPerProject` hosts (each is
   * decrypted and served to every build of the project). Puts of one project take turns, so two
   * new hosts cannot both take the last place.
   */
  async put(
    projectId: string,
    host: string,
    login: { username: string; secret: string },
    maxPerProject: number,
  ): Promise<RegistryCredentialView> {
    const { username, secret } = login;
    const secretCiphertext = encryptSecret(this.requireKey(), projectId, host, secret);
    return this.prisma
      .$transaction(async (tx) => {
        await tx.$executeRaw`SELECT pg_advisory_xact_lock(${LOGINS_LOCK_CLASS}::int4, hashtext(${projectId}))`;
        const others = await tx.registryCredential.count({ where: { projectId, host: { not: host } } });
        if (others >= maxPerProject) {
          throw new AppError(
            'conflict',
            `a project may hold logins to at most ${maxPerProject} registries (KILN_REGISTRY_LOGINS_PER_PROJECT); delete one first`,
          );
        }
        return tx.registryCredential.upsert({
          where: { projectId_host: { projectId, host } },
          create: { projectId, host, username, secretCiphertext },
          update: { username, secretCiphertext },
          select: { host: true, username: true, updatedAt: true },
        });
      })
      .then((row) => ({ ...row, usable: true }));
  }

  async list(projectId: string): Promise<RegistryCredentialView[]> {
    const rows = await this.prisma.registryCredential.findMany({
      where: { projectId },
      select: { host: true, username: true, updatedAt: true, secretCiphertext: true },
      orderBy: { host: 'asc' },
    });
    const keys = this.keys;
    return rows.map(({ secretCiphertext, ...view }) => ({
      ...view,
      usable: keys !== undefined && openStored(keys, projectId, view.host, secretCiphertext) !== undefined,
    }));
  }

  async delete(projectId: string, host: string): Promise<boolean> {
    const { count } = await this.prisma.registryCredential.deleteMany({ where: { projectId, host } });
    return count > 0;
  }

  /**
   * The project's credentials in clear, by host, for one build. A row no key opens (the key
   * changed without KILN_CREDENTIALS_PREVIOUS_KEYS) is left out and reported, so the build goes
   * anonymous to that host.
   */
  async forBuild(
    projectId: string,
    onUnreadable: (host: string) => void,
  ): Promise<Map<string, { username: string; secret: string }>> {
    const out = new Map<string, { username: string; secret: string }>();
    const keys = this.keys;
    if (!keys) return out;
    const rows = await this.prisma.registryCredential.findMany({ where: { projectId } });
    for (const row of rows) {
      const opened = openStored(keys, projectId, row.host, row.secretCiphertext);
      if (opened) out.set(row.host, { username: row.username, secret: opened.value });
      else onUnreadable(row.host);
    }
    return out;
  }

  /**
   * Seals under the current key every login a previous key sealed, so that key can be dropped
   * from KILN_CREDENTIALS_PREVIOUS_KEYS. A login put meanwhile is left as it is (it is the
   * current key's already). Counts what it sealed again, and what no key opens.
   */
  async resealStale(): Promise<{ resealed: number; unreadable: number }> {
    const counts = { resealed: 0, unreadable: 0 };
    const keys = this.keys;
    if (!keys) return counts;
    let after = '';
    for (;;) {
      const rows = await this.prisma.registryCredential.findMany({
        where: { id: { gt: after } },
        orderBy: { id: 'asc' },
        take: RESEAL_PAGE,
      });
      for (const row of rows) {
        const opened = openStored(keys, row.projectId, row.host, row.secretCiphertext);
        if (!opened) counts.unreadable++;
        if (!opened?.stale) continue;
        const { count } = await this.prisma.registryCredential.updateMany({
          where: { id: row.id, secretCiphertext: row.secretCiphertext },
          data: {
            secretCiphertext: encryptSecret(keys.current, row.projectId, row.host, opened.value),
            // The login did not change: its owner's "last set" stays.
            updatedAt: row.updatedAt,
          },
        });
        counts.resealed += count;
      }
      if (rows.length < RESEAL_PAGE) return counts;
      after = (rows.at(-1) as { id: string }).id;
    }
  }
}

const RESEAL_PAGE = 500;
