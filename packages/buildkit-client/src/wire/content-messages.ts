// containerd.services.content.v1.Content's messages (proto/containerd/services/content/v1/
// content.proto), as the session's content store speaks them: requests decoded, answers
// encoded, by hand like the other session messages. Field names are the proto's.
import {
  decodeStringMapEntry,
  fieldBytes,
  fieldInt64,
  fieldString,
  ProtoWriter,
  readFields,
  writeStringMap,
} from './protobuf.js';

/** containerd's WriteAction enum, by name. */
const WRITE_ACTIONS = ['STAT', 'WRITE', 'COMMIT'] as const;
export type WriteAction = (typeof WRITE_ACTIONS)[number];

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export interface ReadContentRequest {
  digest: string;
  offset: number;
  size: number;
}

export interface WriteContentRequest {
  action: WriteAction;
  ref: string;
  total: number;
  expected: string;
  offset: number;
  /** A view of the received message. */
  data: Buffer;
}

export interface WriteContentResponse {
  action: WriteAction;
  offset: number;
  total: number;
  digest: string;
}

/** InfoRequest, DeleteContentRequest: the digest in field 1. */
export function decodeDigestRequest(buf: Buffer): { digest: string } {
  let digest = '';
  for (const f of readFields(buf)) if (f.field === 1) digest = fieldString(f);
  return { digest };
}

/** StatusRequest, AbortRequest: the write's ref in field 1. */
export function decodeRefRequest(buf: Buffer): { ref: string } {
  let ref = '';
  for (const f of readFields(buf)) if (f.field === 1) ref = fieldString(f);
  return { ref };
}

function decodeInfo(buf: Buffer): ContentInfo {
  const info: ContentInfo = { digest: '', size: 0, labels: {} };
  for (const f of readFields(buf)) {
    if (f.field === 1) info.digest = fieldString(f);
    else if (f.field === 2) info.size = fieldInt64(f);
    else if (f.field === 5) decodeStringMapEntry(f, info.labels);
  }
  return info;
}

/** UpdateRequest (its field mask is not read: this store keeps no labels to update). */
export function decodeUpdateRequest(buf: Buffer): { info: ContentInfo } {
  let info = decodeInfo(Buffer.alloc(0));
  for (const f of readFields(buf)) if (f.field === 1) info = decodeInfo(fieldBytes(f));
  return { info };
}

export function decodeReadContentRequest(buf: Buffer): ReadContentRequest {
  const r: ReadContentRequest = { digest: '', offset: 0, size: 0 };
  for (const f of readFields(buf)) {
    if (f.field === 1) r.digest = fieldString(f);
    else if (f.field === 2) r.offset = fieldInt64(f);
    else if (f.field === 3) r.size = fieldInt64(f);
  }
  return r;
}

export function decodeWriteContentRequest(buf: Buffer): WriteContentRequest {
  const r: WriteContentRequest = {
    action: 'STAT',
    ref: '',
    total: 0,
    expected: '',
    offset: 0,
    data: Buffer.alloc(0),
  };
  for (const f of readFields(buf)) {
    if (f.field === 1) {
      const action = WRITE_ACTIONS[fieldInt64(f)];
      if (action === undefined) throw new Error(`unknown write action ${fieldInt64(f)}`);
      r.action = action;
    } else if (f.field === 2) r.ref = fieldString(f);
    else if (f.field === 3) r.total = fieldInt64(f);
    else if (f.field === 4) r.expected = fieldString(f);
    else if (f.field === 5) r.offset = fieldInt64(f);
    else if (f.field === 6) r.data = fieldBytes(f);
  }
  return r;
}

function encodeInfo(info: ContentInfo): Buffer {
  const w = new ProtoWriter().string(1, info.digest).int64(2, info.size);
  return writeStringMap(w, 5, info.labels).finish();
}

/** InfoResponse and UpdateResponse: the blob's Info in field 1. */
export function encodeInfoResponse(res: { info: ContentInfo }): Buffer {
  return new ProtoWriter().message(1, encodeInfo(res.info)).finish();
}

export function encodeReadContentResponse(res: { offset: number; data: Buffer }): Buffer {
  return new ProtoWriter().int64(1, res.offset).bytes(2, res.data).finish();
}

export function encodeWriteContentResponse(res: WriteContentResponse): Buffer {
  return new ProtoWriter()
    .uint32(1, WRITE_ACTIONS.indexOf(res.action))
    .int64(4, res.offset)
    .int64(5, res.total)
    .string(6, res.digest)
    .finish();
}
