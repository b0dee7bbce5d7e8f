// Shared benchmark helpers.
import autocannon from 'autocannon';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { Redis } from 'ioredis';

export interface Bench {
  title: string;
  run(): Promise<void>;
}

export interface LoadResult {
  requests: number;
  rps: number;
  errors: number;
  non2xx: number;
  p50: number;
  p99: number;
}

/** autocannon against a URL on loopback, keep-alive, bounded by duration or amount. */
export async function load(
  url: string,
  opts: {
    connections?: number;
    duration?: number;
    amount?: number;
    headers?: Record<string, string>;
    method?: string;
    body?: string;
  } = {},
): Promise<LoadResult> {
  const r = await autocannon({
    url,
    connections: opts.connections ?? 50,
    pipelining: 1,
    ...(opts.amount ? { amount: opts.amount } : { duration: opts.duration ?? 5 }),
    headers: opts.headers,
    method: (opts.method ?? 'GET') as 'GET',
    body: opts.body,
  });
  return {
    requests: r.requests.total,
    rps: r.requests.average,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : String(n));

let wrkPath: string | null | undefined;

/** wrk (Debian package `wrk`) when installed: a C load generator that does not saturate first. */
export function hasWrk(): boolean {
  if (wrkPath === undefined) {
    const r = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' });
    wrkPath = r.status === 0 ? r.stdout.trim() : null;
  }
  return wrkPath !== null;
}

function wrkMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : n;
}

/** wrk -t2 -c50 -d{duration}s --latency; same result shape as load(). */
export async function wrkLoad(
  url: string,
  opts: { connections?: number; duration?: number } = {},
): Promise<LoadResult> {
  const args = ['-t2', `-c${opts.connections ?? 50}`, `-d${opts.duration ?? 5}s`, '--latency', url];
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(wrkPath!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let s = '';
    p.stdout.on('data', (d: Buffer) => (s += d.toString()));
    p.on('error', reject);
    p.on('exit', () => resolve(s));
  });
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  const lat = (pct: string) => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
    return m ? wrkMs(m[1]!, m[2]!) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    errors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    p50: lat('50'),
    p99: lat('99'),
  };
}

/** CPU time (user + system, ms) of a process, from /proc; 0 once it is gone. */
export function procCpuMs(pid: number): number {
  // The scheduler's nanosecond run time of every thread (the JS thread, libuv's pool, V8's GC
  // helpers); /proc/PID/stat counts in 10 ms ticks, too coarse for rounds of ~1 s of CPU, and is
  // the fallback where the kernel keeps no schedstat.
  const { main, helpers } = threadsCpuMs(pid);
  if (Number.isFinite(main + helpers) && main + helpers > 0) return main + helpers;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // USER_HZ = 100
  } catch {
    return 0;
  }
}

/**
 * A process's CPU time (ms, the threads' schedstat) split into its main thread (the JS thread)
 * and the rest (V8's GC and compiler helpers, libuv's pool): what a change costs in each.
 */
export function threadsCpuMs(pid: number): { main: number; helpers: number } {
  let main = 0;
  let helpers = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        if (Number(tid) === pid) main += ns / 1e6;
        else helpers += ns / 1e6;
      } catch {
        /* the thread ended */
      }
    }
  } catch {
    /* the process ended */
  }
  return { main, helpers };
}

/** A process and its descendants, as the kernel sees them now. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const kids = readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, 'utf8').trim();
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** CPU time (ms) of a process tree (the primary, its workers, the spare) so far. */
export function treeCpuMs(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + procCpuMs(pid), 0);
}

/**
 * One streaming POST /agent/v1/chat/completions as app `app`: true when it answered 200 and
 * ended with `data: [DONE]`; never rejects.
 */
export function chatStream(
  agent: http.Agent,
  port: number,
  body: string,
  app: string,
  headers?: Record<string, string>,
): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/agent/v1/chat/completions',
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': app, ...headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve(res.statusCode === 200 && text.endsWith('data: [DONE]\n\n')));
        res.on('error', () => resolve(false));
      },
    );
    req.on('error', () => resolve(false));
    req.end(body);
  });
}

/** GET /health on a fresh connection: true on a 200, false on anything else (1 s at most). */
export function get200(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: p, path: '/health', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
  });
}

/**
 * TEST_REDIS_URL (default the local Redis) and, when it answers a PING, the service's settings
 * for it: without them a bench skips its Redis cases and says so.
 */
export async function reachableRedis(): Promise<{
  url: string;
  env?: { REDIS_ADDR: string; REDIS_PASSWORD: string };
}> {
  const url = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const probe = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  const ok = await probe.connect().then(
    () => probe.ping().then(() => true),
    () => false,
  );
  probe.disconnect();
  if (!ok) return { url };
  const u = new URL(url);
  return {
    url,
    env: {
      REDIS_ADDR: `${u.hostname}:${u.port || 6379}`,
      REDIS_PASSWORD: decodeURIComponent(u.password),
    },
  };
}
