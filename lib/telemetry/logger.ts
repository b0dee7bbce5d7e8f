// winston logging: JSON lines when stdout is not a TTY (or LOG_FORMAT=json), readable lines on a
// TTY. Every line carries role, worker_id and pid; secrets are redacted on a copy.
import winston from 'winston';
import { currentRequestId } from './context.js';
import { redact } from './redact.js';

export type Role = 'primary' | 'worker' | 'cli';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type Logger = winston.Logger;

export interface LoggerOptions {
  role: Role;
  workerId?: number;
  level?: LogLevel;
  format?: 'auto' | 'json' | 'text';
  /** Defaults to process.stdout.isTTY. */
  tty?: boolean;
}

const requestIdFormat = winston.format((info) => {
  const id = currentRequestId();
  if (id !== undefined && info.request_id === undefined) info.request_id = id;
  return info;
});

const redactFormat = winston.format((info) => {
  const copy = redact(info) as winston.Logform.TransformableInfo;
  for (const sym of Object.getOwnPropertySymbols(info)) {
    (copy as unknown as Record<symbol, unknown>)[sym] = (
      info as unknown as Record<symbol, unknown>
    )[sym];
  }
  return copy;
});

const SKIP = new Set(['level', 'message', 'timestamp', 'role', 'worker_id', 'pid']);

const textLine = winston.format.printf((info) => {
  const who = info.role === 'worker' ? `worker ${String(info.worker_id)}` : String(info.role);
  const extras = Object.entries(info)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${String(info.timestamp)} ${info.level.padEnd(5)} [${who} ${String(info.pid)}] ${String(info.message)}${extras ? ` ${extras}` : ''}`;
});

export function createLogger(opts: LoggerOptions): Logger {
  const tty = opts.tty ?? Boolean(process.stdout.isTTY);
  const json = opts.format === 'json' || (opts.format !== 'text' && !tty);
  const defaultMeta: Record<string, unknown> = { role: opts.role, pid: process.pid };
  if (opts.workerId !== undefined) defaultMeta.worker_id = opts.workerId;
  return winston.createLogger({
    level: opts.level ?? 'info',
    defaultMeta,
    format: winston.format.combine(
      winston.format.timestamp(),
      requestIdFormat(),
      redactFormat(),
      json ? winston.format.json() : textLine,
    ),
    transports: [new winston.transports.Console({ stderrLevels: [] })],
  });
}
