export { type BuildkitAddress, parseAddress } from './address.js';
export {
  BuildkitClient,
  type ByteExportType,
  type CacheEntry,
  type ConnectOptions,
  connect,
  type ExportEntry,
  type PruneOptions,
  type SolveOptions,
  type SolveResult,
  type TlsOptions,
  type UsageRecord,
  type WorkerInfo,
} from './client.js';
export * from './context.js';
export {
  BuildkitConnectionError,
  BuildkitError,
  CanceledError,
  InvalidArgumentError,
  SolveError,
  UnsupportedError,
} from './errors.js';
export type { KeepaliveOptions } from './grpc/client-connection.js';
export { PlainProgressRenderer } from './progress.js';
export type { RegistryAuth, RegistryCredentials } from './session/auth.js';
export type { ContentStore } from './session/content.js';
export type { LocalDir } from './session/filesync.js';
export type { SecretProvider, Secrets, SecretValue } from './session/secrets.js';
export type { StatusEvent, VertexInfo } from './status.js';
