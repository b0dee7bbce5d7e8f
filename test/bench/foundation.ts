// Issue 2 figures: /health throughput against a bare node:cluster server (ratio), kill -9 to
// replacement-ready latency, idle RSS of the primary and the workers.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, ROOT, sleep, startService } from '../support/service.js';
import { fmt, hasWrk, load, percentile, wrkLoad, type Bench } from './lib.js';

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

async function bare(port: number): Promise<() => Promise<void>> {
  const proc = spawn(process.execPath, [join(ROOT, 'test/bench/bare-cluster.mjs')], {
    env: { ...process.env, PORT: String(port), WORKERS: '2' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) =>
    proc.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && res()),
  );
  return async () => {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  };
}

const bench: Bench = {
  title: 'supervisor + Express vs bare node:cluster; crash replacement; idle memory',
  async run() {
    const DURATION = Number(process.env.BENCH_DURATION ?? 5);
    // --- throughput, interleaved: bare, agent, bare, agent, bare, agent --------------------
    const barePort = await freePort();
    const stopBare = await bare(barePort);
    const agent = await startService({ env: { SERVICE_WORKERS: '2', LOG_LEVEL: 'warn' } });
    await agent.waitForLog(() => false, 1500).catch(() => undefined);
    const bareRps: number[] = [];
    const agentRps: number[] = [];
    const tool = hasWrk()
      ? 'wrk -t2 -c50'
      : 'autocannon -c50 in-process (install wrk for better figures)';
    const run = (url: string) =>
      hasWrk() ? wrkLoad(url, { duration: DURATION }) : load(url, { duration: DURATION });
    for (let round = 0; round < 3; round++) {
      const b = await run(`http://127.0.0.1:${barePort}/health`);
      const a = await run(`http://127.0.0.1:${agent.port}/health`);
      if (b.errors + b.non2xx + a.errors + a.non2xx > 0)
        throw new Error('errors during the throughput run');
      bareRps.push(b.rps);
      agentRps.push(a.rps);
    }
    await stopBare();
    await agent.stop();
    const med = (xs: number[]) => percentile(xs, 50);
    console.log(`GET /health, 2 workers, ${DURATION}s x3 interleaved, ${tool}:`);
    console.log(`  bare node:cluster + node:http : ${fmt(med(bareRps), 0)} req/s (median)`);
    console.log(`  astron-agent                  : ${fmt(med(agentRps), 0)} req/s (median)`);
    console.log(
      `  ratio agent/bare              : ${fmt(med(agentRps) / med(bareRps), 2)}  (target >= 0.5)`,
    );

    // --- kill -9 -> replacement ready ------------------------------------------------------
    // Kills are spaced beyond SERVICE_RESTART_STABLE so each one takes the "first crash,
    // replaced at once" path (later crashes in a row are delayed by the backoff on purpose).
    // Measured with the default warm spare (SERVICE_SPARE_WORKERS=1) and without it.
    let primaryRss = NaN;
    let workerRss: number[] = [];
    for (const spare of ['1', '0']) {
      const svc = await startService({
        env: {
          SERVICE_WORKERS: '2',
          SERVICE_SPARE_WORKERS: spare,
          SERVICE_RESTART_STABLE: '500',
          SERVICE_CRASH_BUDGET: '1000',
        },
      });
      await svc.waitReady();
      await sleep(2000);
      if (spare === '1') {
        primaryRss = rssMb(svc.proc.pid!);
        workerRss = svc.readyWorkerPids().map(rssMb);
      }
      const latencies: number[] = [];
      for (let i = 0; i < 12; i++) {
        await sleep(1200); // the spare used by the previous kill is back on standby
        const mark = svc.logs.length;
        const [victim] = svc.readyWorkerPids();
        const t0 = performance.now();
        process.kill(victim!, 'SIGKILL');
        await svc.waitForLog((l) => l.message === 'worker ready', 10000, mark);
        latencies.push(performance.now() - t0);
      }
      await svc.stop();
      console.log(
        `kill -9 -> replacement ready ('ready' log line), ${latencies.length} kills, SERVICE_SPARE_WORKERS=${spare}: ` +
          `p50 ${fmt(percentile(latencies, 50), 0)} ms, p95 ${fmt(percentile(latencies, 95), 0)} ms  (target p50 <= 300 ms)`,
      );
    }
    console.log(
      `idle RSS after 2 s: primary ${fmt(primaryRss)} MB (target <= 60), workers ${workerRss.map((m) => fmt(m)).join(' / ')} MB (target <= 80); the spare is one more idle worker`,
    );
  },
};
export default bench;
