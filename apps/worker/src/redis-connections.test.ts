// The worker's own Redis commands against a Redis that stops answering on an open connection (a
// frozen server, a partition that drops packets): reached through a TCP relay that, once frozen,
// passes nothing on either way. They fail instead of waiting for ever.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { env } from '../test-support/helpers.js';
import { commandConnection } from './redis-connections.js';

let relay: net.Server;
let frozen = false;
const sockets = new Set<net.Socket>();
let redis: Redis;

before(async () => {
  const target = new URL(env.redisUrl);
  relay = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d) => frozen || upstream.write(d));
    upstream.on('data', (d) => frozen || client.write(d));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const url = new URL(env.redisUrl);
  url.host = `127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
  redis = commandConnection(url.toString(), 1000);
  redis.on('error', () => {});
});
after(async () => {
  redis?.disconnect();
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => relay?.close(resolve));
});

test('a command Redis does not answer fails after the command timeout, and the next one too', async () => {
  assert.equal(await redis.ping(), 'PONG');
  frozen = true;
  const started = Date.now();
  await assert.rejects(redis.eval('return 1', 0), /Command timed out/);
  await assert.rejects(redis.set('kiln:test:frozen', '1'), /Command timed out/);
  // Bounded only to show that it ends.
  assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
});
