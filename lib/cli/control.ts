// `astron-agent status|reload|scale|stop`: ask the running primary over its control socket and
// wait for the outcome. When no socket answers, reload/scale/stop fall back to signals through
// the pid file (and say that the outcome cannot be known); status then says what it can.
import net from 'node:net';
import { resolve } from 'node:path';
import { readDotenv } from '../config/dotenv.js';
import { defaultConfigPath, loadConfig, type LoadOptions } from '../config/load.js';
import { SettingsError } from '../config/settings.js';
import type { ControlLine, ControlRequest, ResultLine } from '../supervisor/control.js';
import type { WorkerStatus } from '../supervisor/pool.js';
import { isAlive, readPid } from '../supervisor/pidfile.js';

type Answer = { result: ResultLine } | { unreachable: string; code?: string };

/** LSB `status` exit codes. */
const RUNNING = 0;
const NOT_RUNNING = 3;
const UNKNOWN = 4;

function ask(
  path: string,
  req: ControlRequest,
  onProgress: (m: string) => void,
  timeoutMs: number,
): Promise<Answer | 'timeout'> {
  return new Promise((done) => {
    const sock = net.connect(path);
    let buf = '';
    let settled = false;
    const finish = (a: Answer | 'timeout') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      done(a);
    };
    const timer = timeoutMs > 0 ? setTimeout(() => finish('timeout'), timeoutMs) : undefined;
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line: ControlLine;
        try {
          line = JSON.parse(buf.slice(0, nl)) as ControlLine;
        } catch {
          finish({ unreachable: 'the control socket answered something that is not JSON' });
          return;
        }
        buf = buf.slice(nl + 1);
        if (line.type === 'progress') onProgress(line.message);
        else finish({ result: line });
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) =>
      finish({ unreachable: err.message, code: err.code }),
    );
    sock.on('close', () =>
      finish({ unreachable: 'the service closed the control connection without an answer' }),
    );
  });
}

/** Where to find the running service. */
interface Paths {
  SERVICE_CONTROL_SOCKET: string;
  SERVICE_PID_FILE: string;
}

/**
 * The socket and pid file from the configuration. An invalid config.env must not stop the CLI
 * from reaching the service (a reload of it is how the operator learns what the service thinks
 * of it): then the two raw values are read, or their defaults.
 */
function paths(opts: LoadOptions): Paths {
  try {
    return loadConfig(opts).settings;
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    const file = readDotenv(resolve(opts.configPath ?? defaultConfigPath(opts.env)));
    const raw = (k: keyof Paths, d: string) => opts.env[k] ?? file.values.get(k) ?? d;
    return {
      SERVICE_CONTROL_SOCKET: raw('SERVICE_CONTROL_SOCKET', 'data/astron-agent.sock'),
      SERVICE_PID_FILE: raw('SERVICE_PID_FILE', 'data/astron-agent.pid'),
    };
  }
}

function socketPath(s: Paths): string | undefined {
  return s.SERVICE_CONTROL_SOCKET ? resolve(s.SERVICE_CONTROL_SOCKET) : undefined;
}

/** The pid of a live primary from the pid file, if any. */
function runningPid(s: Paths): number | null {
  if (!s.SERVICE_PID_FILE) return null;
  const pid = readPid(s.SERVICE_PID_FILE);
  return pid !== null && isAlive(pid) ? pid : null;
}

const err = (line: string) => process.stderr.write(`${line}\n`);
const out = (line: string) => process.stdout.write(`${line}\n`);

function duration(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function lastExit(w: WorkerStatus): string {
  const e = w.last_exit;
  if (!e) return '-';
  const how = e.signal ?? `code ${e.code ?? '?'}`;
  return `${how} (${e.reason}) ${e.at.slice(11, 19)}`;
}

interface StatusBody {
  service: {
    pid: number;
    version: string;
    uptime_s: number;
    phase: string;
    config_file: string;
    listen: string;
    workers: number;
    inflight: number;
  };
  workers: WorkerStatus[];
}

function table(st: StatusBody): string {
  const s = st.service;
  const head = `astron-agent ${s.version}  pid ${s.pid}  ${s.phase}  up ${duration(s.uptime_s)}  listen ${s.listen}  workers ${s.workers}  in flight ${s.inflight}\nconfig ${s.config_file}`;
  const rows = [
    [
      'SLOT',
      'WORKER',
      'PID',
      'ROLE',
      'GEN',
      'UPTIME',
      'REQUESTS',
      'INFLIGHT',
      'STREAMS',
      'CONNS',
      'RSS',
      'RESTARTS',
      'LAST EXIT',
    ],
    ...st.workers.map((w) => [
      w.slot ? String(w.slot) : '-',
      String(w.worker),
      String(w.pid),
      w.role,
      String(w.generation),
      duration(w.uptime_s),
      String(w.requests),
      String(w.inflight),
      String(w.streams),
      w.connections === undefined ? '-' : String(w.connections),
      w.rss ? `${Math.round(w.rss / 1048576)} MB` : '-',
      String(w.restarts),
      lastExit(w),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${head}\n${rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}`;
}

export async function controlCommand(
  opts: LoadOptions,
  command: 'status' | 'reload' | 'scale' | 'stop',
  args: { json?: boolean; timeoutMs?: number; workers?: string },
): Promise<number> {
  const s = paths(opts);
  const path = socketPath(s);
  const req: ControlRequest =
    command === 'scale' ? { cmd: 'scale', workers: args.workers ?? '' } : { cmd: command };
  const answer: Answer | 'timeout' = path
    ? await ask(
        path,
        req,
        (m) => out(m),
        command === 'status' ? (args.timeoutMs ?? 3000) : (args.timeoutMs ?? 0),
      )
    : { unreachable: 'SERVICE_CONTROL_SOCKET is empty' };

  if (answer === 'timeout') {
    err(`no outcome within ${args.timeoutMs} ms; the ${command} goes on in the service`);
    return command === 'status' ? UNKNOWN : 1;
  }
  if ('result' in answer) {
    const r = answer.result;
    if (command === 'status') {
      const st = r.status as StatusBody;
      out(args.json ? JSON.stringify(st, null, 2) : table(st));
      return RUNNING;
    }
    if (r.ok) out(r.message);
    else err(`${command} ${r.result}: ${r.message}`);
    return r.ok ? 0 : 1;
  }

  // No answer on the socket.
  const pid = runningPid(s);
  const where = path ? `control socket ${path}: ${answer.unreachable}` : answer.unreachable;
  if (answer.code === 'EACCES' || answer.code === 'EPERM') {
    err(`${where}: run this as the service's user (or root)`);
    return command === 'status' ? UNKNOWN : 1;
  }
  if (command === 'status') {
    if (pid === null) {
      out('astron-agent is not running');
      return NOT_RUNNING;
    }
    err(`${where}; the primary (pid ${pid}) is alive but did not answer`);
    return UNKNOWN;
  }
  if (pid === null) {
    err(`no running astron-agent found (${where}; pid file ${s.SERVICE_PID_FILE || 'none'})`);
    return 1;
  }
  err(`${where}; falling back to signals through the pid file (the outcome cannot be reported)`);
  if (command === 'reload') {
    process.kill(pid, 'SIGHUP');
    out(`sent SIGHUP to astron-agent primary ${pid} (rolling reload)`);
    return 0;
  }
  if (command === 'scale') {
    const m = /^([+-])(\d{1,3})$/.exec((args.workers ?? '').trim());
    if (!m) {
      err('without the control socket only +N and -N can be applied (one SIGTTIN/SIGTTOU each)');
      return 1;
    }
    for (let i = 0; i < Number(m[2]); i++) {
      process.kill(pid, m[1] === '+' ? 'SIGTTIN' : 'SIGTTOU');
      await new Promise((r) => setTimeout(r, 50));
    }
    out(`sent ${m[2]} x ${m[1] === '+' ? 'SIGTTIN' : 'SIGTTOU'} to astron-agent primary ${pid}`);
    return 0;
  }
  process.kill(pid, 'SIGTERM');
  out(`sent SIGTERM to astron-agent primary ${pid}; waiting for it to exit`);
  const until = args.timeoutMs ? Date.now() + args.timeoutMs : Infinity;
  while (isAlive(pid)) {
    if (Date.now() > until) {
      err(`still running after ${args.timeoutMs} ms`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  out('stopped (whether every worker drained is in the service log)');
  return 0;
}
