import { randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A ULID (26 characters, Crockford base32: 48-bit millisecond time, 80 random bits), as
 * Prisma's `@default(ulid())` makes them, for rows inserted without Prisma. Ids sort by
 * creation time to the millisecond, like the ones Prisma generates.
 */
export function newUlid(now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  // 80 bits = 16 characters of 5 bits: read them from 10 random bytes as one big number.
  let bits = BigInt(`0x${randomBytes(10).toString('hex')}`);
  let random = '';
  for (let i = 0; i < 16; i++) {
    random = CROCKFORD[Number(bits & 31n)] + random;
    bits >>= 5n;
  }
  return time + random;
}
