import net from 'node:net';

export interface UpgradeOptions {
  socketPath: string;
  /** `/grpc` for the Control API, `/session` for a session. */
  path: string;
  headers?: Array<[string, string]>;
  timeoutMs?: number;
}

/**
 * Opens a connection to a Docker daemon socket and switches it to HTTP/2 with
 * `Upgrade: h2c`; after the 101 the socket carries plain HTTP/2 (gRPC). This is how the
 * docker CLI reaches the daemon's embedded BuildKit.
 */
export function dockerUpgrade(opts: UpgradeOptions): Promise<net.Socket> {
  const { socketPath, path, headers = [], timeoutMs = 10_000 } = opts;
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let received = Buffer.alloc(0);
    const fail = (err: Error) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new Error(`no answer from ${socketPath} to POST ${path} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) {
        if (received.length > 64 * 1024) fail(new Error(`oversized HTTP response head from ${socketPath}`));
        return;
      }
      const head = received.subarray(0, end).toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
      if (status !== '101') {
        const firstLine = head.split('\r\n', 1)[0];
        const body = received
          .subarray(end + 4, end + 4 + 500)
          .toString('utf8')
          .trim();
        fail(new Error(`POST ${path} on ${socketPath} answered "${firstLine}"${body ? `: ${body}` : ''}`));
        return;
      }
      // Stop the flow before detaching: bytes after the head (often the server's SETTINGS
      // frame, in the same chunk) must wait for the HTTP/2 consumer, not be emitted to no one.
      socket.pause();
      cleanup();
      const rest = received.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    const onError = (err: Error) => fail(err);
    const onClose = () => fail(new Error(`${socketPath} closed the connection during the upgrade`));
    function cleanup() {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    }
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('connect', () => {
      const lines = [
        `POST ${path} HTTP/1.1`,
        'Host: docker',
        'Connection: Upgrade',
        'Upgrade: h2c',
        'Content-Length: 0',
        ...headers.map(([k, v]) => `${k}: ${v}`),
      ];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
  });
}
