/**
 * AES-256-GCM with associated data, the one way Kiln encrypts at rest (registry logins, build
 * secrets in Redis): a random 12-byte nonce per message and a whole 16-byte tag, so a ciphertext
 * opens only under its key and with the data it was bound to.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export interface Sealed {
  iv: Buffer;
  tag: Buffer;
  body: Buffer;
}

export function seal(key: Buffer, aad: Buffer, plaintext: Buffer): Sealed {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, tag: cipher.getAuthTag(), body };
}

/** Throws when it was not sealed under this key with this data (or was altered). */
export function open(key: Buffer, aad: Buffer, { iv, tag, body }: Sealed): Buffer {
  // A whole 16-byte tag only: GCM would otherwise check as few bytes as it is given.
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(body), decipher.final()]);
}
