import { LocalDirStorage, type LocalDirStorageOptions } from './local.js';
import type { S3Storage, S3StorageOptions } from './s3.js';

export type { LocalDirStorageOptions, LocalSignatureParams } from './local.js';
export { LOCAL_FILES_PATH, LocalDirStorage, verifyLocalSignature } from './local.js';
export type { S3Storage, S3StorageOptions, StorageLogger } from './s3.js';
export type { GetOptions, GetResult, ObjectInfo, ObjectStorage, PutOptions, PutResult } from './types.js';
export { contentDisposition, getIfStored, MAX_KEY_LENGTH, validateKey } from './util.js';

/** What `createStorage` takes; `KilnConfig['storage']` (config.ts) fits it. */
export type CreateStorageConfig =
  | ({ kind: 'local' } & LocalDirStorageOptions)
  | ({ kind: 's3' } & S3StorageOptions);

/**
 * The storage backend a config names. The AWS SDK is loaded only when S3 is configured: it
 * adds about 20 MiB to a process's resident memory.
 */
export async function createStorage(config: CreateStorageConfig): Promise<LocalDirStorage | S3Storage> {
  switch (config.kind) {
    case 'local': {
      const { kind: _kind, ...opts } = config;
      return new LocalDirStorage(opts);
    }
    case 's3': {
      const { kind: _kind, ...opts } = config;
      const { S3Storage } = await import('./s3.js');
      return new S3Storage(opts);
    }
    default: {
      const never: never = config;
      throw new Error(`unknown storage kind ${(never as { kind?: unknown }).kind}`);
    }
  }
}
