// Logging: JSON lines when stdout is not a TTY (or LOG_FORMAT=json), readable lines on a TTY.
// Every line carries role, worker_id and pid; secrets are redacted on a copy.
//
// A small logger of our own (it replaced winston, whose import alone cost every process ~80 ms
// of CPU and a few MB): a line below the level returns at the first comparison, before any
// copy, redaction or serialisation of its meta.
import { redact } from './redact.js';

export type Role = 'primary' | 'worker' | 'cli';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export type LogMeta = Record<string, unknown>;
export type LogMethod = (message: string, meta?: LogMeta) => void;

export interface Logger {
  readonly level: LogLevel;
  error: LogMethod;
  warn: LogMethod;
  info: LogMethod;
  debug: LogMethod;
  log(level: LogLevel, message: string, meta?: LogMeta): void;
  isLevelEnabled(level: LogLevel): boolean;
}

export interface LoggerOptions {
  role: Role;
  workerId?: number;
  level?: LogLevel;
  format?: 'auto' | 'json' | 'text';
  /** Defaults to process.stdout.isTTY. */
  tty?: boolean;
  /** Where each line (with its newline) goes; default process.stdout. */
  write?: (line: string) => void;
}

const SEVERITY: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

const SKIP = new Set(['level', 'message', 'timestamp', 'role', 'worker_id', 'pid']);

/** JSON.stringify that writes a bigint as its decimal string instead of throwing. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

function textLine(info: Record<string, unknown>): string {
  const who = info.role === 'worker' ? `worker ${String(info.worker_id)}` : String(info.role);
  let extras = '';
  for (const [k, v] of Object.entries(info)) {
    if (SKIP.has(k) || v === undefined) continue;
    extras += ` ${k}=${typeof v === 'string' ? v : toJson(v)}`;
  }
  return `${String(info.timestamp)} ${String(info.level).padEnd(5)} [${who} ${String(info.pid)}] ${String(info.message)}${extras}`;
}

export function createLogger(opts: LoggerOptions): Logger {
  const tty = opts.tty ?? Boolean(process.stdout.isTTY);
  const json = opts.format === 'json' || (opts.format !== 'text' && !tty);
  const level = opts.level ?? 'info';
  const max = SEVERITY[level];
  const write = opts.write ?? ((line: string) => void process.stdout.write(line));
  const defaults: LogMeta = { role: opts.role, pid: process.pid };
  if (opts.workerId !== undefined) defaults.worker_id = opts.workerId;

  const emit = (lvl: LogLevel, message: string, meta?: LogMeta): void => {
    // Only lines at or above the level get this far.
    const info: Record<string, unknown> = { level: lvl, message, ...defaults };
    if (meta) {
      const safe = redact(meta) as LogMeta;
      for (const k in safe) {
        // As winston did: a meta `message` is appended to the line's message.
        if (k === 'message') info.message = `${message} ${String(safe[k])}`;
        else if (k !== 'level') info[k] = safe[k];
      }
    }
    info.message = redact(info.message);
    info.timestamp = new Date().toISOString();
    write(`${json ? toJson(info) : textLine(info)}\n`);
  };
  const at =
    (lvl: LogLevel): LogMethod =>
    (message, meta) => {
      if (SEVERITY[lvl] <= max) emit(lvl, message, meta);
    };
  return {
    level,
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    log(lvl, message, meta) {
      if (SEVERITY[lvl] <= max) emit(lvl, message, meta);
    },
    isLevelEnabled: (lvl) => SEVERITY[lvl] <= max,
  };
}
