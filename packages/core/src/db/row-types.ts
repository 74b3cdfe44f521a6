import pg from 'pg';

const TIMESTAMP_OID = 1114;
const INT8_OID = 20;

/**
 * Parsers that make plain-SQL rows equal Prisma's: Prisma writes `timestamp(3)` columns (no time
 * zone) in UTC, which pg's default parser would read as local time; int8 columns are BigInt in
 * Prisma's types.
 */
export const prismaRowTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === TIMESTAMP_OID) return (value: string) => new Date(`${value.replace(' ', 'T')}Z`);
    if (oid === INT8_OID) return (value: string) => BigInt(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;
