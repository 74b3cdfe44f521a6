import * as grpc from '@grpc/grpc-js';
import { loadProtoService } from './wire/proto-service.js';

/** The Control service as grpc-js builds it from the vendored proto (plain objects in, plain objects out). */
export type ControlClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

let controlCtor: grpc.ServiceClientConstructor | undefined;

function loadControl(): grpc.ServiceClientConstructor {
  controlCtor ??= loadProtoService('moby/buildkit/v1/control.proto', 'moby.buildkit.v1.Control');
  return controlCtor;
}

export function createControlClient(
  target: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ChannelOptions,
): ControlClient {
  const Ctor = loadControl();
  return new Ctor(target, credentials, options) as unknown as ControlClient;
}

/** Promise wrapper for a unary Control call. */
export function unary<Res>(
  client: ControlClient,
  method: string,
  request: object,
  options: grpc.CallOptions = {},
): Promise<Res> {
  const fn = client[method] as (
    req: object,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res: Res) => void,
  ) => grpc.ClientUnaryCall;
  return new Promise((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), options, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Collects a server-streaming Control call into an array. */
export function collect<Res>(client: ControlClient, method: string, request: object): Promise<Res[]> {
  const fn = client[method] as (req: object) => grpc.ClientReadableStream<Res>;
  const out: Res[] = [];
  return new Promise((resolve, reject) => {
    const call = fn.call(client, request);
    call.on('data', (r: Res) => out.push(r));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}
