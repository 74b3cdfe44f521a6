// moby.buildkit.v1.Control's messages (proto/moby/buildkit/v1/control.proto), encoded and
// decoded by hand: loading the proto at run time (proto-loader, protobufjs) cost every bkctl
// command ~40 ms of start-up. Field names are the proto's; a decoder fills what the client reads.
import {
  decodeStringMapEntry,
  decodeTimestamp,
  fieldBool,
  fieldBytes,
  fieldInt64,
  fieldString,
  ProtoWriter,
  readFields,
  type Timestamp,
  writeStringMap,
} from './protobuf.js';

export type { Timestamp } from './protobuf.js';

export interface CacheOptionsEntry {
  Type: string;
  Attrs: Record<string, string>;
}

export interface SolveRequest {
  Ref: string;
  /** The exporter's type; one exporter per solve (`Exporter`, which every generation reads). */
  Exporter: string;
  ExporterAttrs: Record<string, string>;
  Session: string;
  Frontend: string;
  FrontendAttrs: Record<string, string>;
  Cache: { Exports: CacheOptionsEntry[]; Imports: CacheOptionsEntry[] };
}

export interface SolveResponse {
  ExporterResponse: Record<string, string>;
}

export interface PruneRequest {
  filter: string[];
  all: boolean;
  /** Nanoseconds. */
  keepDuration: number;
  keepBytes: number;
}

export interface Vertex {
  digest: string;
  inputs?: string[];
  name: string;
  cached: boolean;
  started?: Timestamp | null;
  completed?: Timestamp | null;
  error?: string;
}

export interface VertexStatus {
  ID: string;
  vertex: string;
  name: string;
  current: number;
  total: number;
  timestamp?: Timestamp | null;
  started?: Timestamp | null;
  completed?: Timestamp | null;
}

export interface VertexLog {
  vertex: string;
  timestamp?: Timestamp | null;
  stream: number;
  msg: Buffer;
}

export interface VertexWarning {
  vertex: string;
  level: number;
  short: Buffer;
  detail?: Buffer[];
  url: string;
}

/** Optional members: a status message carries any of them (tests build partial ones too). */
export interface StatusResponse {
  vertexes?: Vertex[];
  statuses?: VertexStatus[];
  logs?: VertexLog[];
  warnings?: VertexWarning[];
}

export interface BuildkitVersion {
  package: string;
  version: string;
  revision: string;
}

export interface InfoResponse {
  buildkitVersion: BuildkitVersion;
}

export interface Platform {
  Architecture: string;
  OS: string;
  Variant: string;
}

export interface WorkerRecord {
  ID: string;
  Labels: Record<string, string>;
  platforms: Platform[];
  BuildkitVersion: BuildkitVersion | null;
}

export interface UsageRecord {
  ID: string;
  Mutable: boolean;
  InUse: boolean;
  Size: number;
  CreatedAt: Timestamp | null;
  LastUsedAt: Timestamp | null;
  UsageCount: number;
  Description: string;
  RecordType: string;
  Shared: boolean;
}

// ---- requests -------------------------------------------------------------------------------

function encodeCacheEntry(e: CacheOptionsEntry): Buffer {
  return writeStringMap(new ProtoWriter().string(1, e.Type), 2, e.Attrs).finish();
}

export function encodeSolveRequest(r: SolveRequest): Buffer {
  const cache = new ProtoWriter();
  for (const e of r.Cache.Exports) cache.message(4, encodeCacheEntry(e));
  for (const e of r.Cache.Imports) cache.message(5, encodeCacheEntry(e));
  const w = new ProtoWriter().string(1, r.Ref).string(3, r.Exporter);
  writeStringMap(w, 4, r.ExporterAttrs).string(5, r.Session).string(6, r.Frontend);
  return writeStringMap(w, 7, r.FrontendAttrs).message(8, cache.finish()).finish();
}

export function encodeStatusRequest(ref: string): Buffer {
  return new ProtoWriter().string(1, ref).finish();
}

/** ListWorkersRequest and DiskUsageRequest: both a list of filters in field 1. */
export function encodeFilterRequest(filter: readonly string[]): Buffer {
  const w = new ProtoWriter();
  for (const f of filter) w.string(1, f);
  return w.finish();
}

export function encodePruneRequest(r: PruneRequest): Buffer {
  const w = new ProtoWriter();
  for (const f of r.filter) w.string(1, f);
  return w
    .uint32(2, r.all ? 1 : 0)
    .int64(3, r.keepDuration)
    .int64(4, r.keepBytes)
    .finish();
}

// ---- responses ------------------------------------------------------------------------------

export function decodeSolveResponse(buf: Buffer): SolveResponse {
  const ExporterResponse: Record<string, string> = {};
  for (const f of readFields(buf)) if (f.field === 1) decodeStringMapEntry(f, ExporterResponse);
  return { ExporterResponse };
}

function decodeVertex(buf: Buffer): Vertex {
  const v: Required<Vertex> = {
    digest: '',
    inputs: [],
    name: '',
    cached: false,
    started: null,
    completed: null,
    error: '',
  };
  for (const f of readFields(buf)) {
    if (f.field === 1) v.digest = fieldString(f);
    else if (f.field === 2) v.inputs.push(fieldString(f));
    else if (f.field === 3) v.name = fieldString(f);
    else if (f.field === 4) v.cached = fieldBool(f);
    else if (f.field === 5) v.started = decodeTimestamp(f);
    else if (f.field === 6) v.completed = decodeTimestamp(f);
    else if (f.field === 7) v.error = fieldString(f);
  }
  return v;
}

function decodeVertexStatus(buf: Buffer): VertexStatus {
  const s: VertexStatus = {
    ID: '',
    vertex: '',
    name: '',
    current: 0,
    total: 0,
    timestamp: null,
    started: null,
    completed: null,
  };
  for (const f of readFields(buf)) {
    if (f.field === 1) s.ID = fieldString(f);
    else if (f.field === 2) s.vertex = fieldString(f);
    else if (f.field === 3) s.name = fieldString(f);
    else if (f.field === 4) s.current = fieldInt64(f);
    else if (f.field === 5) s.total = fieldInt64(f);
    else if (f.field === 6) s.timestamp = decodeTimestamp(f);
    else if (f.field === 7) s.started = decodeTimestamp(f);
    else if (f.field === 8) s.completed = decodeTimestamp(f);
  }
  return s;
}

function decodeVertexLog(buf: Buffer): VertexLog {
  const l: VertexLog = { vertex: '', timestamp: null, stream: 0, msg: Buffer.alloc(0) };
  for (const f of readFields(buf)) {
    if (f.field === 1) l.vertex = fieldString(f);
    else if (f.field === 2) l.timestamp = decodeTimestamp(f);
    else if (f.field === 3) l.stream = fieldInt64(f);
    else if (f.field === 4) l.msg = f.bytes ?? l.msg;
  }
  return l;
}

function decodeVertexWarning(buf: Buffer): VertexWarning {
  const w: Required<VertexWarning> = { vertex: '', level: 0, short: Buffer.alloc(0), detail: [], url: '' };
  for (const f of readFields(buf)) {
    if (f.field === 1) w.vertex = fieldString(f);
    else if (f.field === 2) w.level = fieldInt64(f);
    else if (f.field === 3) w.short = f.bytes ?? w.short;
    else if (f.field === 4) w.detail.push(fieldBytes(f));
    else if (f.field === 5) w.url = fieldString(f);
  }
  return w;
}

export function decodeStatusResponse(buf: Buffer): StatusResponse {
  const r: Required<StatusResponse> = { vertexes: [], statuses: [], logs: [], warnings: [] };
  for (const f of readFields(buf)) {
    const bytes = fieldBytes(f);
    if (f.field === 1) r.vertexes.push(decodeVertex(bytes));
    else if (f.field === 2) r.statuses.push(decodeVertexStatus(bytes));
    else if (f.field === 3) r.logs.push(decodeVertexLog(bytes));
    else if (f.field === 4) r.warnings.push(decodeVertexWarning(bytes));
  }
  return r;
}

function decodeBuildkitVersion(buf: Buffer): BuildkitVersion {
  const v: BuildkitVersion = { package: '', version: '', revision: '' };
  for (const f of readFields(buf)) {
    if (f.field === 1) v.package = fieldString(f);
    else if (f.field === 2) v.version = fieldString(f);
    else if (f.field === 3) v.revision = fieldString(f);
  }
  return v;
}

export function decodeInfoResponse(buf: Buffer): InfoResponse {
  let buildkitVersion = decodeBuildkitVersion(Buffer.alloc(0));
  for (const f of readFields(buf)) if (f.field === 1) buildkitVersion = decodeBuildkitVersion(fieldBytes(f));
  return { buildkitVersion };
}

function decodePlatform(buf: Buffer): Platform {
  const p: Platform = { Architecture: '', OS: '', Variant: '' };
  for (const f of readFields(buf)) {
    if (f.field === 1) p.Architecture = fieldString(f);
    else if (f.field === 2) p.OS = fieldString(f);
    else if (f.field === 3) p.Variant = fieldString(f);
  }
  return p;
}

function decodeWorkerRecord(buf: Buffer): WorkerRecord {
  const r: WorkerRecord = { ID: '', Labels: {}, platforms: [], BuildkitVersion: null };
  for (const f of readFields(buf)) {
    if (f.field === 1) r.ID = fieldString(f);
    else if (f.field === 2) decodeStringMapEntry(f, r.Labels);
    else if (f.field === 3) r.platforms.push(decodePlatform(fieldBytes(f)));
    else if (f.field === 5) r.BuildkitVersion = decodeBuildkitVersion(fieldBytes(f));
  }
  return r;
}

export function decodeListWorkersResponse(buf: Buffer): { record: WorkerRecord[] } {
  const record: WorkerRecord[] = [];
  for (const f of readFields(buf)) if (f.field === 1) record.push(decodeWorkerRecord(fieldBytes(f)));
  return { record };
}

export function decodeUsageRecord(buf: Buffer): UsageRecord {
  const r: UsageRecord = {
    ID: '',
    Mutable: false,
    InUse: false,
    Size: 0,
    CreatedAt: null,
    LastUsedAt: null,
    UsageCount: 0,
    Description: '',
    RecordType: '',
    Shared: false,
  };
  for (const f of readFields(buf)) {
    if (f.field === 1) r.ID = fieldString(f);
    else if (f.field === 2) r.Mutable = fieldBool(f);
    else if (f.field === 3) r.InUse = fieldBool(f);
    else if (f.field === 4) r.Size = fieldInt64(f);
    else if (f.field === 6) r.CreatedAt = decodeTimestamp(f);
    else if (f.field === 7) r.LastUsedAt = decodeTimestamp(f);
    else if (f.field === 8) r.UsageCount = fieldInt64(f);
    else if (f.field === 9) r.Description = fieldString(f);
    else if (f.field === 10) r.RecordType = fieldString(f);
    else if (f.field === 11) r.Shared = fieldBool(f);
  }
  return r;
}

export function decodeDiskUsageResponse(buf: Buffer): { record: UsageRecord[] } {
  const record: UsageRecord[] = [];
  for (const f of readFields(buf)) if (f.field === 1) record.push(decodeUsageRecord(fieldBytes(f)));
  return { record };
}
