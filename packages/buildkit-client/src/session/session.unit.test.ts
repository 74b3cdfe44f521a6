import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Session } from './session.js';

test('session headers announce id, name, shared key and every hosted method', () => {
  const session = new Session({ localDirs: { context: '/tmp' }, sharedKey: 'k' });
  const headers = session.headers();
  assert.match(session.id, /^[0-9a-z]{25}$/);
  assert.deepEqual(
    headers.filter(([k]) => k.endsWith('Grpc-Method')).map(([, v]) => v),
    ['/moby.filesync.v1.FileSync/DiffCopy', '/grpc.health.v1.Health/Check'],
  );
  assert.ok(headers.some(([k, v]) => k === 'X-Docker-Expose-Session-Sharedkey' && v === 'k'));
  assert.ok(headers.some(([k, v]) => k === 'X-Docker-Expose-Session-Uuid' && v === session.id));
});

test('the Secrets service is announced only when secrets are given', () => {
  const methods = (session: Session) =>
    session
      .headers()
      .filter(([k]) => k.endsWith('Grpc-Method'))
      .map(([, v]) => v);
  assert.ok(!methods(new Session()).includes('/moby.buildkit.secrets.v1.Secrets/GetSecret'));
  assert.ok(methods(new Session({ secrets: {} })).includes('/moby.buildkit.secrets.v1.Secrets/GetSecret'));
});
