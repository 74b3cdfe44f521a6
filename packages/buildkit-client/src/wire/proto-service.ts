import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../package-root.js';

const PROTO_ROOT = fileURLToPath(new URL('proto/', PACKAGE_ROOT));

/**
 * A service of a vendored proto (`file` under proto/, `name` its full name, e.g.
 * `moby.buildkit.v1.Control`), as grpc-js builds it: plain objects in and out, fields as the
 * proto names them, 64-bit integers as numbers, enums as their names.
 */
export function loadProtoService(file: string, name: string): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(file, {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
    objects: true,
  });
  let node: unknown = grpc.loadPackageDefinition(def);
  for (const part of name.split('.')) node = (node as Record<string, unknown>)[part];
  return node as grpc.ServiceClientConstructor;
}
