// Issue 14 point 3 figures, side by side in one run: a fresh worker's fork -> ready (SQLite, and
// MySQL + Redis) and a rolling reload of 2 workers; start -> first 200 on /health with 1 worker
// against bare node:cluster; the CLI's short commands against `node -e 0`; idle RSS and PSS of
// every process of the deployment with and without the warm spare, against bare node:cluster,
// 3 s after ready and again 12 s after (past V8's memory reducer), with idle CPU in both windows.
// Printed, never asserted (machines here are shared and noisy: compare the ratios).
//
// fork -> ready is the primary's own measure: the `ms` of its 'worker ready' log line (from
// cluster.fork() to the worker's ready message), read during rolling reloads (one fresh worker at
// a time, as in production). BENCH_PORT_BASE (e.g. 19000) takes ports from there on instead of
// free ephemeral ones.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mysqlEnv, mysqlTargetOrLocal, scratchDatabase } from '../support/mysql.js';
import { CLI, freePort, ROOT, sleep, startService, tempDir } from '../support/service.js';
import {
  fmt,
  get200,
  percentile,
  processTree,
  procCpuMs,
  reachableRedis,
  type Bench,
} from './lib.js';

let nextPort = Number(process.env.BENCH_PORT_BASE ?? 0);
const port = async () => (nextPort > 0 ? nextPort++ : await freePort());
const med = (xs: number[]) => percentile(xs, 50);

/** VmRSS and Pss (smaps_rollup) of a process, MB. */
function memory(pid: number): { rss: number; pss: number } {
  const kb = (file: string, re: RegExp) => {
    try {
      return Number(re.exec(readFileSync(`/proc/${pid}/${file}`, 'utf8'))?.[1] ?? NaN) / 1024;
    } catch {
      return NaN;
    }
  };
  return { rss: kb('status', /VmRSS:\s+(\d+)/), pss: kb('smaps_rollup', /^Pss:\s+(\d+)/m) };
}

/** CPU ms of this process's waited-for children so far (cutime + cstime, 10 ms ticks). */
function childrenCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** A process's children, as the kernel sees them now. */
const children = (pid: number): number[] => processTree(pid).slice(1);

/** Spawns `args`, polls GET /health every 2 ms; ms from spawn to the first 200; then stops it. */
async function startToFirst200(args: string[], env: Record<string, string>, p: number) {
  const cwd = tempDir('astron-bench-');
  const t0 = performance.now();
  const proc = spawn(process.execPath, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: 'ignore',
  });
  let ms = NaN;
  while (proc.exitCode === null && performance.now() - t0 < 20000) {
    if (await get200(p)) {
      ms = performance.now() - t0;
      break;
    }
    await sleep(2);
  }
  const exited = new Promise((r) => proc.once('exit', r));
  if (proc.exitCode === null) proc.kill('SIGTERM');
  await exited;
  return ms;
}

async function cliCommands(rounds: number): Promise<void> {
  const svc = await startService({
    env: { SERVICE_WORKERS: '1', SERVICE_SPARE_WORKERS: '0', SERVICE_PORT: String(await port()) },
  });
  await svc.waitReady();
  const cwd = tempDir('astron-bench-');
  writeFileSync(join(cwd, 'config.env'), `SERVICE_HOST=127.0.0.1\nSERVICE_PORT=${svc.port}\n`);
  const cmds: [string, string[]][] = [
    ['node -e 0', ['-e', '0']],
    ['--help', [CLI, '--help']],
    ['version', [CLI, 'version']],
    ['config', [CLI, 'config']],
    ['health', [CLI, 'health']],
  ];
  const times = new Map<string, number[]>(cmds.map(([k]) => [k, []]));
  const cpu = new Map<string, number>(cmds.map(([k]) => [k, 0]));
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' };
  try {
    for (let i = 0; i < rounds; i++) {
      for (const [k, args] of cmds) {
        const c0 = childrenCpuMs();
        const t0 = performance.now();
        const r = spawnSync(process.execPath, args, { cwd, env, stdio: 'ignore' });
        if (r.status !== 0) throw new Error(`${k} exited ${r.status}`);
        times.get(k)!.push(performance.now() - t0);
        cpu.set(k, cpu.get(k)! + childrenCpuMs() - c0);
      }
    }
  } finally {
    await svc.stop();
  }
  const base = med(times.get('node -e 0')!);
  const baseCpu = cpu.get('node -e 0')! / rounds;
  console.log(
    `CLI commands, wall time from spawn to exit (median) and CPU (mean), ${rounds} interleaved rounds:`,
  );
  for (const [k] of cmds) {
    const m = med(times.get(k)!);
    const c = cpu.get(k)! / rounds;
    console.log(
      `  ${k.padEnd(10)} ${fmt(m, 0).padStart(5)} ms, CPU ${fmt(c, 0).padStart(4)} ms` +
        (k === 'node -e 0'
          ? ''
          : `   +${fmt(m - base, 0)} ms wall, +${fmt(c - baseCpu, 0)} ms CPU over node -e 0 (target <= +100)`),
    );
  }
}

async function firstResponse(rounds: number): Promise<void> {
  const agent: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const pb = await port();
    bare.push(
      await startToFirst200(
        [join(ROOT, 'test/bench/bare-cluster.mjs')],
        { PORT: String(pb), WORKERS: '1' },
        pb,
      ),
    );
    const pa = await port();
    agent.push(
      await startToFirst200(
        [CLI, 'start'],
        {
          SERVICE_HOST: '127.0.0.1',
          SERVICE_PORT: String(pa),
          SERVICE_WORKERS: '1',
          SERVICE_SPARE_WORKERS: '0',
          LOG_FORMAT: 'json',
        },
        pa,
      ),
    );
  }
  console.log(
    `start -> first 200 on /health, 1 worker, no spare, median of ${rounds} interleaved:\n` +
      `  astron-agent start            : ${fmt(med(agent), 0)} ms (target <= 500; min ${fmt(Math.min(...agent), 0)})\n` +
      `  bare node:cluster + node:http : ${fmt(med(bare), 0)} ms (min ${fmt(Math.min(...bare), 0)})  ratio ${fmt(med(agent) / med(bare), 2)}`,
  );
}

/** 2 workers, no spare; `reloads` rolling reloads (SIGHUP): fork -> ready of each new worker. */
async function forkToReady(name: string, env: Record<string, string>, reloads: number) {
  const svc = await startService({
    env: {
      ...env,
      SERVICE_WORKERS: '2',
      SERVICE_SPARE_WORKERS: '0',
      SERVICE_PORT: String(await port()),
      LOG_LEVEL: 'debug',
    },
  });
  const ready: number[] = [];
  const reload: number[] = [];
  const bootCpu: number[] = [];
  try {
    await svc.waitReady();
    await sleep(1000);
    for (let i = 0; i < reloads; i++) {
      const mark = svc.logs.length;
      svc.proc.kill('SIGHUP');
      const done = await svc.waitForLog((l) => l.message === 'rolling reload done', 30000, mark);
      reload.push(Number(done.duration_ms));
      for (const l of svc.logs.slice(mark)) {
        if (l.message === 'worker ready') ready.push(Number(l.ms));
        if (l.message === 'worker booted') bootCpu.push(Number(l.cpu_ms));
      }
      await sleep(500);
    }
  } finally {
    await svc.stop();
  }
  console.log(
    `  ${name.padEnd(14)} fork -> ready p50 ${fmt(med(ready), 0)} ms, p90 ${fmt(percentile(ready, 90), 0)} ms (${ready.length} workers; target p50 <= 250 with SQLite); ` +
      `rolling reload of 2: p50 ${fmt(med(reload), 0)} ms; a worker's CPU from its start to ready p50 ${fmt(med(bootCpu), 0)} ms`,
  );
}

/** CPU ms per second of each process while nothing is asked of them (timers, heartbeats). */
async function idleCpu(pids: number[], seconds = 5): Promise<string> {
  const c0 = pids.map(procCpuMs);
  await sleep(seconds * 1000);
  return pids.map((pid, i) => fmt((procCpuMs(pid) - c0[i]!) / seconds, 2)).join(' / ');
}

/** When idle memory and CPU are read, in s after ready: before and after V8's memory reducer. */
const EARLY_S = 3;
const SETTLED_S = 12;

interface Idle {
  early: Map<number, { rss: number; pss: number }>;
  settled: Map<number, { rss: number; pss: number }>;
  cpuEarly: string;
  cpuSettled: string;
}

/**
 * Memory of every process of a deployment 3 s after ready, and again 12 s after: V8's memory
 * reducer (a few mark-compacts about 8 s after a process's start allocations stop) runs in
 * between and gives back the start-up garbage, so the second is what an idle deployment keeps.
 * Idle CPU over 5 s in each window (the first one holds the reducer's GCs).
 */
async function observeIdle(root: number, readyAt: number): Promise<Idle> {
  const snap = () => {
    const m = new Map<number, { rss: number; pss: number }>();
    for (const pid of [root, ...children(root)]) m.set(pid, memory(pid));
    return m;
  };
  const until = async (s: number) => {
    const wait = readyAt + s * 1000 - Date.now();
    if (wait > 0) await sleep(wait);
  };
  await until(EARLY_S);
  const early = snap();
  const cpuEarly = await idleCpu([root, ...children(root)]);
  await until(SETTLED_S);
  const settled = snap();
  const cpuSettled = await idleCpu([root, ...children(root)]);
  return { early, settled, cpuEarly, cpuSettled };
}

async function idleMemory(): Promise<void> {
  const rows: string[] = [];
  const cpuRows: string[] = [];
  const sum = (ms: { rss: number; pss: number }[]) =>
    ms.reduce((a, b) => ({ rss: a.rss + b.rss, pss: a.pss + b.pss }), { rss: 0, pss: 0 });
  const mb = (m: { rss: number; pss: number }) => `${fmt(m.rss)} / ${fmt(m.pss)}`;
  for (const spare of ['1', '0']) {
    const svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_SPARE_WORKERS: spare,
        SERVICE_PORT: String(await port()),
      },
    });
    try {
      await svc.waitReady();
      const readyAt = Date.now();
      const want = 2 + Number(spare);
      const until = Date.now() + 10000;
      while (children(svc.proc.pid!).length < want && Date.now() < until) await sleep(100);
      const root = svc.proc.pid!;
      const idle = await observeIdle(root, readyAt);
      const serving = new Set(svc.readyWorkerPids());
      for (const [when, m] of [
        [`${EARLY_S} s`, idle.early],
        [`${SETTLED_S} s`, idle.settled],
      ] as const) {
        const workers = [...m].filter(([pid]) => pid !== root);
        rows.push(
          `  spare ${spare}, ${when}: primary ${mb(m.get(root)!)} (target RSS <= 45); ` +
            workers
              .map(([pid, w]) => `${serving.has(pid) ? 'worker' : 'spare'} ${mb(w)}`)
              .join('; ') +
            ` (target RSS <= 60 each); all ${mb(sum([...m.values()]))}`,
        );
      }
      if (spare === '0')
        cpuRows.push(
          `  astron-agent, primary / workers: ${idle.cpuEarly} (${EARLY_S}-${EARLY_S + 5} s); ${idle.cpuSettled} (${SETTLED_S}-${SETTLED_S + 5} s)`,
        );
    } finally {
      await svc.stop();
    }
  }
  const p = await port();
  const proc = spawn(process.execPath, [join(ROOT, 'test/bench/bare-cluster.mjs')], {
    env: { ...process.env, PORT: String(p), WORKERS: '2' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) =>
    proc.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && res()),
  );
  const bare = await observeIdle(proc.pid!, Date.now());
  cpuRows.push(
    `  bare node:cluster, primary / workers: ${bare.cpuEarly} (${EARLY_S}-${EARLY_S + 5} s); ${bare.cpuSettled} (${SETTLED_S}-${SETTLED_S + 5} s)`,
  );
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  for (const [when, m] of [
    [`${EARLY_S} s`, bare.early],
    [`${SETTLED_S} s`, bare.settled],
  ] as const) {
    const [bp, ...bw] = [...m.values()];
    rows.push(
      `  bare node:cluster, ${when}: primary ${mb(bp!)}; workers ${bw.map(mb).join('; ')}; all ${mb(sum([...m.values()]))}`,
    );
  }
  console.log(
    `idle memory ${EARLY_S} s and ${SETTLED_S} s after ready (V8's memory reducer runs in between), 2 workers, RSS / PSS in MB:`,
  );
  for (const r of rows) console.log(r);
  console.log('idle CPU, 2 workers and no spare, ms of CPU per second over 5 s:');
  for (const r of cpuRows) console.log(r);
}

const bench: Bench = {
  title: 'lean, quick workers: fork -> ready, start -> first 200, CLI commands, idle memory',
  async run() {
    const rounds = Number(process.env.BENCH_ROUNDS ?? 9);
    // BENCH_FOOTPRINT_PARTS=cli,first,fork,idle (all by default): a part alone for a quick check.
    const parts = (process.env.BENCH_FOOTPRINT_PARTS ?? 'cli,first,fork,idle').split(',');
    if (parts.includes('cli')) await cliCommands(rounds + 2);
    if (parts.includes('first')) await firstResponse(rounds);
    if (parts.includes('fork')) await forkParts(rounds);
    if (parts.includes('idle')) await idleMemory();
  },
};
export default bench;

/** Fork -> ready with SQLite, then with MySQL + Redis when both are reachable. */
async function forkParts(rounds: number): Promise<void> {
  console.log('fresh worker, fork -> ready (primary log), during rolling reloads, 2 workers:');
  const reloads = Math.max(2, Math.ceil(rounds / 2));
  await forkToReady('SQLite', {}, reloads);
  const target = mysqlTargetOrLocal();
  const redis = await reachableRedis();
  let db: Awaited<ReturnType<typeof scratchDatabase>> | undefined;
  try {
    db = await scratchDatabase(target);
  } catch (err) {
    console.log(
      `  MySQL at ${target.host}:${target.port} not usable (${(err as Error).message}): skipped`,
    );
  }
  if (db && redis.env) {
    try {
      await forkToReady('MySQL + Redis', { ...mysqlEnv(db.target), ...redis.env }, reloads);
    } finally {
      await db.drop();
    }
  } else if (db) {
    await db.drop();
    console.log(`  Redis at ${redis.url} not reachable: MySQL + Redis skipped`);
  }
}
