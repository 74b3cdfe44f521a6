import { type Logger, pino } from 'pino';
import { chooseLogFormat, type LogFormatSetting, prettyDestination } from './log-format.js';

export type { Logger } from 'pino';

/** Structured logs, JSON or readable (`log-format.ts`); signed URLs and tokens never reach them (see `redact`). */
export function createLogger(name: string, level = 'info', format: LogFormatSetting = 'json'): Logger {
  const options = {
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
  };
  return chooseLogFormat(format, process.stdout.isTTY === true) === 'pretty'
    ? pino(options, prettyDestination())
    : pino(options);
}
