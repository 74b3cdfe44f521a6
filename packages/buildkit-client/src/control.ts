import type { ClientCall, GrpcConnection } from './grpc/client-connection.js';
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

/** BuildKit's Control service, with the hand-written codecs of wire/control-messages.ts. */
export class ControlClient {
  constructor(private readonly connection: GrpcConnection) {}

  close(): void {
    this.connection.close();
  }

  /** Solve, with extra metadata (e.g. a W3C `traceparent`); cancel() ends the build. */
  solve(
    request: SolveRequest,
    metadata: Record<string, string>,
  ): { response: Promise<SolveResponse>; cancel: () => void } {
    return this.connection.unary(
      `${CONTROL}Solve`,
      encodeSolveRequest,
      decodeSolveResponse,
      request,
      metadata,
    );
  }

  status(ref: string): ClientCall<StatusResponse> {
    return this.connection.serverStream(`${CONTROL}Status`, encodeStatusRequest, decodeStatusResponse, ref);
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
  async prune(request: PruneRequest): Promise<UsageRecord[]> {
    const out: UsageRecord[] = [];
    for await (const record of this.connection.serverStream(
      `${CONTROL}Prune`,
      encodePruneRequest,
      decodeUsageRecord,
      request,
    ))
      out.push(record as UsageRecord);
    return out;
  }

  private unary<Req, Res>(
    method: string,
    encode: (req: Req) => Buffer,
    decode: (buf: Buffer) => Res,
    request: Req,
  ): Promise<Res> {
    return this.connection.unary(`${CONTROL}${method}`, encode, decode, request).response;
  }
}
