// Drives the real CLI (dist/bin/agent.js) as a child process on a free port, in its own
// temporary working directory, and reads its JSON log lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'bin', 'agent.js');

export async function freePort(): Promise<number> {
  return await new Promise((res, rej) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => res(port));
    });
  });
}

export interface LogLine {
  level?: string;
  message?: string;
  role?: string;
  pid?: number;
  worker?: number;
  worker_id?: number;
  [k: string]: unknown;
}

export interface RunOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Written to config.env in the working directory. */
  configText?: string;
  cwd?: string;
  /** Its own process group (pgid = the primary's pid), e.g. to stop the whole group. */
  detached?: boolean;
  /** Node options before the CLI's path (e.g. `--cpu-prof`; workers inherit them). */
  nodeArgs?: string[];
  /** Another copy of the CLI (default: this checkout's dist/bin/agent.js). */
  cli?: string;
}

export class Service {
  readonly proc: ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly logs: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private listeners: (() => void)[] = [];
  readonly detached: boolean;

  constructor(
    readonly port: number,
    readonly cwd: string,
    opts: RunOptions,
  ) {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      SERVICE_HOST: '127.0.0.1',
      SERVICE_PORT: String(port),
      LOG_FORMAT: 'json',
      ...opts.env,
    };
    // An empty SERVICE_* value in opts.env means "leave it unset" (so config.env decides).
    for (const [k, v] of Object.entries(opts.env ?? {}))
      if (v === '' && k.startsWith('SERVICE_')) delete env[k];
    this.detached = opts.detached === true;
    this.proc = spawn(
      process.execPath,
      [...(opts.nodeArgs ?? []), opts.cli ?? CLI, ...(opts.args ?? ['start'])],
      {
        cwd,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: opts.detached === true,
      },
    );
    const collect = (into: string[], parse: boolean) => {
      let buf = '';
      return (chunk: Buffer) => {
        buf += chunk.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          into.push(line);
          if (parse && line.startsWith('{')) {
            try {
              this.logs.push(JSON.parse(line) as LogLine);
            } catch {
              /* not a log line */
            }
          }
          for (const l of this.listeners) l();
        }
      };
    };
    this.proc.stdout!.on('data', collect(this.stdout, true));
    this.proc.stderr!.on('data', collect(this.stderr, false));
    this.exited = new Promise((res) =>
      this.proc.once('exit', (code, signal) => res({ code, signal })),
    );
    this.exited.then(() => {
      for (const l of this.listeners) l();
    });
  }

  get output(): string {
    return [...this.stdout, ...this.stderr].join('\n');
  }

  /** Waits until a log line matches; rejects on timeout or exit. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 15000, from = 0): Promise<LogLine> {
    return new Promise((res, rej) => {
      let done = false;
      const check = () => {
        if (done) return;
        const hit = this.logs.slice(from).find(pred);
        if (hit) {
          finish();
          res(hit);
        } else if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
          finish();
          rej(
            new Error(
              `service exited before the expected log line; output:\n${this.output.slice(-4000)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        finish();
        rej(new Error(`timed out waiting for a log line; output:\n${this.output.slice(-4000)}`));
      }, timeoutMs);
      const finish = () => {
        done = true;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== check);
      };
      this.listeners.push(check);
      check();
    });
  }

  waitReady(timeoutMs = 20000): Promise<LogLine> {
    return this.waitForLog(
      (l) => typeof l.message === 'string' && l.message.startsWith('ready: '),
      timeoutMs,
    );
  }

  /** Pids of the workers that are currently ready (from the primary's log). */
  readyWorkerPids(): number[] {
    const live = new Map<number, number>();
    for (const l of this.logs) {
      if (l.role !== 'primary' || typeof l.worker !== 'number') continue;
      if (l.message === 'worker ready') live.set(l.worker, l.worker_pid as number);
      else if (/^worker \d+ (exited|killed)/.test(l.message ?? '')) live.delete(l.worker);
    }
    return [...live.values()];
  }

  /** Worker pids: the primary's child processes, as the kernel sees them. */
  childPids(): number[] {
    const pid = this.proc.pid;
    if (pid === undefined) return [];
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  /** Log lines (from `from` on) whose message matches. */
  count(re: RegExp, from = 0): number {
    return this.logs.slice(from).filter((l) => re.test(l.message ?? '')).length;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop(
    signal: NodeJS.Signals = 'SIGTERM',
    timeoutMs = 20000,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.detached && signal === 'SIGKILL') {
      // The group we created: workers stopped with it must not outlive the test.
      for (const sig of ['SIGCONT', 'SIGKILL'] as const) {
        try {
          process.kill(-this.proc.pid!, sig);
        } catch {
          // already gone
        }
      }
    }
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(t);
    }
  }
}

// Every folder a test makes goes when its process exits (a run of the suite made about 150, up to
// half a megabyte each, and left them in /tmp); KEEP_TEST_DIRS=1 keeps them, to look into a failure.
const made: string[] = [];
process.once('exit', () => {
  if (process.env.KEEP_TEST_DIRS === '1') return;
  for (const dir of made) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // A folder that cannot go (a mount still busy) is left as before, silently: a line printed
      // here would follow, and so replace, the run's last line `N passed, N failed, N skipped`.
    }
  }
});

/** A new folder under the system's temporary folder, removed when this process exits. */
export function tempDir(prefix = 'astron-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export async function startService(opts: RunOptions = {}): Promise<Service> {
  const cwd = opts.cwd ?? tempDir();
  if (opts.configText !== undefined) writeFileSync(join(cwd, 'config.env'), opts.configText);
  const port = Number(opts.env?.SERVICE_PORT || (await freePort()));
  return new Service(port, cwd, opts);
}

/** Runs the CLI to completion (for config, health, version, and failing starts). */
export async function runCli(opts: RunOptions & { timeoutMs?: number } = {}) {
  const svc = await startService(opts);
  const t = setTimeout(() => svc.proc.kill('SIGKILL'), opts.timeoutMs ?? 20000);
  const res = await svc.exited;
  clearTimeout(t);
  return { ...res, svc, stdout: svc.stdout.join('\n'), stderr: svc.stderr.join('\n') };
}

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * GET /health `n` times on new connections, 10 at a time; then, while fewer than `workers`
 * distinct workers have answered, 10 more at a time (10 s at most). Right after start a worker
 * may still be loading its metrics modules (after ready), and the kernel then hands every new
 * connection to the other one: tests that need both workers ask for them here.
 */
export async function hitHealth(
  port: number,
  n: number,
  workers = 0,
): Promise<{ pids: Map<number, number>; sent: number }> {
  const pids = new Map<number, number>();
  let sent = 0;
  const until = Date.now() + 10_000;
  while (sent < n || (pids.size < workers && Date.now() < until)) {
    const batch = sent < n ? Math.min(10, n - sent) : 10;
    const res = await Promise.all(Array.from({ length: batch }, () => request(port, '/health')));
    sent += batch;
    for (const r of res) {
      if (r.status !== 200) throw new Error(`/health answered ${r.status}: ${r.body}`);
      const pid = (JSON.parse(r.body) as { pid: number }).pid;
      pids.set(pid, (pids.get(pid) ?? 0) + 1);
    }
  }
  return { pids, sent };
}

export function request(
  port: number,
  path: string,
  opts: {
    method?: string;
    body?: string | Buffer;
    headers?: Record<string, string>;
    agent?: http.Agent | false;
    timeoutMs?: number;
  } = {},
): Promise<HttpResult> {
  return new Promise((res, rej) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        agent: opts.agent ?? false,
        timeout: opts.timeoutMs ?? 10000,
      },
      (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () =>
          res({
            status: r.statusCode ?? 0,
            headers: r.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        r.on('error', rej);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', rej);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** Whether a process exists (signal 0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 50 ms until it holds; throws with `what` after `timeoutMs`. */
export async function waitUntil(
  cond: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}
