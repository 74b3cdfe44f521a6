import { LocalDirStorage, type LocalDirStorageOptions } from './local.js';
import { S3Storage, type S3StorageOptions } from './s3.js';

export type { LocalDirStorageOptions, LocalSignatureParams } from './local.js';
export { LOCAL_FILES_PATH, LocalDirStorage, verifyLocalSignature } from './local.js';
export type { S3StorageOptions, StorageLogger } from './s3.js';
export { DEFAULT_PART_SIZE, S3Storage } from './s3.js';
export type { GetOptions, GetResult, ObjectInfo, ObjectStorage, PutOptions, PutResult } from './types.js';
export { contentDisposition, MAX_KEY_LENGTH, validateKey } from './util.js';

/** What `createStorage` takes; `KilnConfig['storage']` (config.ts) fits it. */
export type CreateStorageConfig =
  | ({ kind: 'local' } & LocalDirStorageOptions)
  | ({ kind: 's3' } & S3StorageOptions);

/** The storage backend a config names. */
export function createStorage(config: CreateStorageConfig): LocalDirStorage | S3Storage {
  switch (config.kind) {
    case 'local': {
      const { kind: _kind, ...opts } = config;
      return new LocalDirStorage(opts);
    }
    case 's3': {
      const { kind: _kind, ...opts } = config;
      return new S3Storage(opts);
    }
    default: {
      const never: never = config;
      throw new Error(`unknown storage kind ${(never as { kind?: unknown }).kind}`);
    }
  }
}
