// Throwaway certificates for TLS tests, made by openssl: no service involved, so unit tests may use it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second CA that signed nothing the server trusts. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  cleanup(): void;
}

/** A throwaway CA with a server certificate for 127.0.0.1/localhost and client certificates, made by openssl. */
export function makeTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bkc-pki-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ca = (name: string) => {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
    );
  };
  const leaf = (name: string, signer: string, ext: string) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    );
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${signer}.crt`,
      '-CAkey',
      `${signer}.key`,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
  };
  ca('ca');
  ca('otherca');
  leaf(
    'server',
    'ca',
    'subjectAltName=DNS:buildkitd.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n',
  );
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('otherclient', 'otherca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    ca: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCa: p('otherca.crt'),
    otherClientCert: p('otherclient.crt'),
    otherClientKey: p('otherclient.key'),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
