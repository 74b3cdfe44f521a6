/**
 * How log lines are written: JSON for machines (files, collectors, pipes), one readable line per
 * record for a person at a terminal. `auto` picks by whether stdout is a terminal, so `npm start`
 * in a shell is readable and the same process under systemd or docker logs JSON.
 */
export type LogFormatSetting = 'auto' | 'json' | 'pretty';
export type LogFormat = 'json' | 'pretty';

export function chooseLogFormat(setting: LogFormatSetting, isTTY: boolean): LogFormat {
  if (setting !== 'auto') return setting;
  return isTTY ? 'pretty' : 'json';
}

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};
// pino's own fields, which the readable line shows in its fixed columns or leaves out.
const SHOWN_APART = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'err']);

/** One pino JSON record as `HH:MM:SS.mmm LEVEL name: message key=value…` (an error's stack below it). */
export function formatLogLine(json: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const time = typeof record.time === 'number' ? new Date(record.time).toISOString().slice(11, 23) : '';
  const level = LEVELS[record.level as number] ?? String(record.level);
  const fields = Object.entries(record)
    .filter(([key]) => !SHOWN_APART.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  const err = record.err as { stack?: string; message?: string } | string | undefined;
  let line = `${time} ${level} ${record.name ?? ''}: ${record.msg ?? ''}`;
  if (typeof err === 'string') fields.unshift(`err=${err}`);
  if (fields.length > 0) line += `  ${fields.join(' ')}`;
  if (err && typeof err === 'object')
    line += `\n    ${(err.stack ?? err.message ?? '').replaceAll('\n', '\n    ')}`;
  return `${line}\n`;
}

/** A pino destination writing readable lines (synchronously, as pino's own stdout does). */
export function prettyDestination(out: { write(chunk: string): unknown } = process.stdout) {
  return { write: (json: string) => out.write(formatLogLine(json)) };
}
