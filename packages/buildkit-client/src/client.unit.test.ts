// Which Solve failures are the daemon's (retried elsewhere by a caller) and which the build's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { daemonFault } from './client.js';
import { BuildkitConnectionError } from './errors.js';
import { GrpcError, status } from './grpc/status.js';

test("a status the daemon sent is the build's; a lost connection or a broken call is the daemon's", () => {
  const sent = new GrpcError(status.UNKNOWN, 'process "/bin/sh -c false" did not complete', {
    sentByPeer: true,
  });
  assert.equal(daemonFault(sent, 'unix:///d.sock'), undefined);
  assert.equal(daemonFault(new Error('other'), 'unix:///d.sock'), undefined);
  assert.equal(
    daemonFault(new GrpcError(status.RESOURCE_EXHAUSTED, 'a message of 20 MiB'), 'unix:///d.sock'),
    undefined,
  );
  for (const [err, text] of [
    [
      new GrpcError(status.UNAVAILABLE, 'the connection to the daemon closed'),
      /^lost the BuildKit daemon at unix:\/\/\/d\.sock: /,
    ],
    [
      new GrpcError(status.INTERNAL, "cannot read the daemon's answer: bad"),
      /^the BuildKit daemon at unix:\/\/\/d\.sock broke the call: cannot read/,
    ],
    [
      new GrpcError(status.UNKNOWN, 'the daemon answered with content-type "text/html", not gRPC'),
      /broke the call: the daemon answered with content-type/,
    ],
    [
      new GrpcError(status.CANCELLED, 'the daemon reset the stream (HTTP/2 error 8)'),
      /broke the call: the daemon reset the stream/,
    ],
  ] as const) {
    const fault = daemonFault(err, 'unix:///d.sock');
    assert.ok(fault instanceof BuildkitConnectionError, err.message);
    assert.match(fault.message, text);
    assert.equal(fault.address, 'unix:///d.sock');
  }
});
