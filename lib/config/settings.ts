// Every setting the service reads, validated and typed with envalid. This table is the one
// source of truth: `astron-agent config`, the start banner and config.env.example follow it.
import { availableParallelism } from 'node:os';
import { cleanEnv } from 'envalid';
import { bool, int, msOrOff, oneOf, port, text, workers } from './validators.js';

export const SETTING_SPECS = {
  // --- service -------------------------------------------------------------------------------
  SERVICE_NAME: text()({ default: 'Agent', desc: 'service name (logs, metrics resource)' }),
  SERVICE_HOST: text(true)({ default: '0.0.0.0', desc: 'bind address' }),
  SERVICE_PORT: port({ default: 17870, desc: 'bind port' }),
  SERVICE_WORKERS: workers(availableParallelism)({
    default: 1,
    desc: 'worker processes: an integer >= 1, or auto (available parallelism)',
  }),
  SERVICE_SCHEDULING: oneOf(['none', 'rr'] as const)({
    default: 'none',
    desc: 'connection distribution: none = the kernel hands connections to workers (a killed worker strands none); rr = round-robin in the primary',
  }),
  SERVICE_RELOAD: bool({ default: false, desc: 'watch code and config.env, rolling reload on change' }),
  SERVICE_GRACEFUL_TIMEOUT: int(0, 3_600_000, 'ms')({
    default: 30000,
    desc: 'how long a stop waits for in-flight requests before SIGKILL',
  }),
  SERVICE_READY_TIMEOUT: int(100, 600_000, 'ms')({
    default: 10000,
    desc: 'how long a new worker may take to report ready',
  }),
  SERVICE_WORKER_TIMEOUT: int(1000, 3_600_000, 'ms')({
    default: 30000,
    desc: 'a worker whose heartbeat is silent this long is killed as hung',
  }),
  SERVICE_RESTART_BACKOFF_BASE: int(0, 600_000, 'ms')({
    default: 200,
    desc: 'restart delay after the second crash in a row; doubles per crash (first crash: at once)',
  }),
  SERVICE_RESTART_BACKOFF_MAX: int(0, 600_000, 'ms')({ default: 10000, desc: 'restart delay cap' }),
  SERVICE_RESTART_STABLE: int(0, 3_600_000, 'ms')({
    default: 30000,
    desc: 'a worker up this long is stable: its crash resets the backoff and is not counted against the budget',
  }),
  SERVICE_CRASH_BUDGET: int(0, 10_000)({
    default: 5,
    desc: 'more unstable restarts than this within SERVICE_CRASH_WINDOW stop the service (exit 4)',
  }),
  SERVICE_CRASH_WINDOW: int(1000, 3_600_000, 'ms')({ default: 60000, desc: 'crash budget window' }),
  SERVICE_MAX_REQUESTS: int(0)({
    default: 0,
    desc: 'recycle a worker (rolling, no request lost) after about this many requests, +0-10% jitter; 0 = off',
  }),
  SERVICE_MAX_MEMORY_MB: int(0)({
    default: 0,
    desc: 'recycle a worker whose RSS exceeds this many MB (checked every second); 0 = off',
  }),
  SERVICE_WS_PING_INTERVAL: msOrOff({
    default: 0,
    desc: 'WebSocket ping interval in ms; false or 0 = off (the original)',
  }),
  SERVICE_WS_PING_TIMEOUT: msOrOff({
    default: 0,
    desc: 'close a WebSocket whose pong is this late (ms); false or 0 = wait one interval',
  }),
  SERVICE_MAX_BODY_SIZE: int(1024, 1024 * 1024 * 1024, 'bytes')({
    default: 1048576,
    desc: 'largest accepted request body; larger gets 413',
  }),
  SERVICE_PID_FILE: text()({
    default: 'data/astron-agent.pid',
    desc: 'the primary writes its pid here (relative to the working directory) for `astron-agent reload`/`stop`; empty = none',
  }),
  RUN_ENVIRON: text()({ default: 'development', desc: 'informational environment name' }),
  // --- logging -------------------------------------------------------------------------------
  LOG_LEVEL: oneOf(['error', 'warn', 'info', 'debug'] as const)({ default: 'info', desc: 'log level' }),
  LOG_FORMAT: oneOf(['auto', 'json', 'text'] as const)({
    default: 'auto',
    desc: 'auto = readable on a TTY, JSON lines otherwise',
  }),
};

export type SettingName = keyof typeof SETTING_SPECS;
export const SETTING_NAMES = Object.keys(SETTING_SPECS) as SettingName[];

type Cleaned = ReturnType<typeof cleanEnv<typeof SETTING_SPECS>>;
export type Settings = { readonly [K in SettingName]: Cleaned[K] };

const SECRET_NAME = /PASSWORD|SECRET|KEY|TOKEN/i;
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'SettingsError';
  }
}

/**
 * Validates the raw values (a merged environment). Throws SettingsError with one line per bad
 * variable, naming it and what is expected; a secret's value is never included.
 */
export function validateSettings(raw: Record<string, string | undefined>): Settings {
  const input: Record<string, string | undefined> = {};
  for (const name of SETTING_NAMES) input[name] = raw[name];
  return cleanEnv(input, SETTING_SPECS, {
    reporter: ({ errors }) => {
      const names = Object.keys(errors);
      if (names.length === 0) return;
      const problems = names.map((name) => {
        const err = errors[name as SettingName];
        const why = err?.message ?? 'invalid';
        const shown = isSecretName(name) ? '' : ` (got ${JSON.stringify(raw[name] ?? '')})`;
        return `invalid setting ${name}: ${why}${shown}`;
      });
      throw new SettingsError(problems);
    },
  }) as Settings;
}
