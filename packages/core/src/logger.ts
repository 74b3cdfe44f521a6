import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/** Structured JSON logs; signed URLs and tokens never reach them (see `redact`). */
export function createLogger(name: string, level = 'info'): Logger {
  return pino({
    name,
    level,
    redact: { paths: ['req.headers.authorization', 'url', '*.url', 'token'], censor: '[redacted]' },
  });
}
