import * as grpc from '@grpc/grpc-js';
import {
  decodeDiskUsageResponse,
  decodeInfoResponse,
  decodeListWorkersResponse,
  decodeSolveResponse,
  decodeStatusResponse,
  decodeUsageRecord,
  encodeFilterRequest,
  encodePruneRequest,
  encodeSolveRequest,
  encodeStatusRequest,
  type InfoResponse,
  type PruneRequest,
  type SolveRequest,
  type SolveResponse,
  type StatusResponse,
  type UsageRecord,
  type WorkerRecord,
} from './wire/control-messages.js';
import { encodeEmpty } from './wire/protobuf.js';

const CONTROL = '/moby.buildkit.v1.Control/';

/**
 * BuildKit's Control service on a grpc-js channel, with the hand-written codecs of
 * wire/control-messages.ts: nothing is loaded from a .proto file at start-up.
 */
export class ControlClient {
  private readonly client: grpc.Client;

  constructor(target: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions) {
    this.client = new grpc.Client(target, credentials, options);
  }

  waitForReady(deadline: number, callback: (err?: Error) => void): void {
    this.client.waitForReady(deadline, callback);
  }

  close(): void {
    this.client.close();
  }

  solve(
    request: SolveRequest,
    metadata: grpc.Metadata,
    callback: (err: grpc.ServiceError | null, res?: SolveResponse) => void,
  ): grpc.ClientUnaryCall {
    return this.client.makeUnaryRequest(
      `${CONTROL}Solve`,
      encodeSolveRequest,
      decodeSolveResponse,
      request,
      metadata,
      {},
      callback,
    );
  }

  status(ref: string): grpc.ClientReadableStream<StatusResponse> {
    return this.client.makeServerStreamRequest(
      `${CONTROL}Status`,
      encodeStatusRequest,
      decodeStatusResponse,
      ref,
      new grpc.Metadata(),
      {},
    );
  }

  info(): Promise<InfoResponse> {
    return this.unary('Info', encodeEmpty, decodeInfoResponse, undefined);
  }

  listWorkers(filter: readonly string[]): Promise<{ record: WorkerRecord[] }> {
    return this.unary('ListWorkers', encodeFilterRequest, decodeListWorkersResponse, filter);
  }

  diskUsage(filter: readonly string[]): Promise<{ record: UsageRecord[] }> {
    return this.unary('DiskUsage', encodeFilterRequest, decodeDiskUsageResponse, filter);
  }

  /** Prune streams the records it removed; they are collected. */
  prune(request: PruneRequest): Promise<UsageRecord[]> {
    const call = this.client.makeServerStreamRequest(
      `${CONTROL}Prune`,
      encodePruneRequest,
      decodeUsageRecord,
      request,
      new grpc.Metadata(),
      {},
    );
    const out: UsageRecord[] = [];
    return new Promise((resolve, reject) => {
      call.on('data', (r: UsageRecord) => out.push(r));
      call.on('error', reject);
      call.on('end', () => resolve(out));
    });
  }

  private unary<Req, Res>(
    method: string,
    encode: (req: Req) => Buffer,
    decode: (buf: Buffer) => Res,
    request: Req,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `${CONTROL}${method}`,
        encode,
        decode,
        request,
        new grpc.Metadata(),
        {},
        (err, res) => (err ? reject(err) : resolve(res as Res)),
      );
    });
  }
}
