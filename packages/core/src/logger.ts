import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/** Structured JSON logs; signed URLs and tokens never reach them (see `redact`). */
export function createLogger(name: string, level = 'info'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        '*.headers.authorization',
        'headers.authorization',
        'busboyOptions.headers.authorization',
        'err.rawPacket',
        'rawPacket',
        'url',
        '*.url',
        'token',
        // Build secrets are never put in log objects; this is the net under that rule.
        'secrets',
        '*.secrets',
      ],
      censor: '[redacted]',
    },
  });
}
