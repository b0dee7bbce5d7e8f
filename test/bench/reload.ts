// Issue 3 figures: a rolling reload under keep-alive load (50 connections, >= 20k requests) at
// 1 and 2 workers: failed requests, and p99 latency of the requests started during the reload
// against those started before it (steady state), in the same run.
import { keepAliveLoad } from '../support/load.js';
import { startService } from '../support/service.js';
import { fmt, load, percentile, type Bench } from './lib.js';

async function once(workers: number) {
  const svc = await startService({ env: { SERVICE_WORKERS: String(workers), LOG_LEVEL: 'info' } });
  await svc.waitReady();
  let hupAt = 0;
  let doneAt = 0;
  const TOTAL = 24000;
  const report = await keepAliveLoad(svc.port, {
    total: TOTAL,
    concurrency: 50,
    until: () => doneAt > 0 && Date.now() > doneAt + 1000,
    onProgress: (n) => {
      if (n === 10000 && !hupAt) {
        hupAt = Date.now();
        svc.proc.kill('SIGHUP');
        void svc
          .waitForLog((l) => l.message === 'rolling reload done', 60000)
          .then((l) => {
            doneAt = Date.parse(String(l.timestamp));
          });
      }
    },
  });
  await svc.stop();
  const steady = report.latencies.filter(([t]) => t < hupAt).map(([, ms]) => ms);
  const during = report.latencies.filter(([t]) => t >= hupAt && t <= doneAt).map(([, ms]) => ms);
  return { report, steady, during, reloadMs: doneAt - hupAt };
}

/** autocannon, 50 keep-alive connections: 20k requests steady, then 40k with a SIGHUP 300 ms in. */
async function withAutocannon(workers: number) {
  const svc = await startService({ env: { SERVICE_WORKERS: String(workers), LOG_LEVEL: 'info' } });
  await svc.waitReady();
  const url = `http://127.0.0.1:${svc.port}/health`;
  const steady = await load(url, { connections: 50, amount: 20000 });
  const mark = svc.logs.length;
  const hup = setTimeout(() => svc.proc.kill('SIGHUP'), 300);
  const reloading = await load(url, { connections: 50, amount: 40000 });
  clearTimeout(hup);
  const done = await svc.waitForLog((l) => l.message === 'rolling reload done', 60000, mark);
  await svc.stop();
  return { steady, reloading, done: Boolean(done) };
}

const bench: Bench = {
  title: 'rolling reload under keep-alive load (50 connections)',
  async run() {
    for (const workers of [1, 2]) {
      const a = await withAutocannon(workers);
      console.log(
        `${workers} worker(s), autocannon: steady 20k requests p99 ${a.steady.p99} ms; ` +
          `40k requests with a SIGHUP reload inside p99 ${a.reloading.p99} ms (ratio ${fmt(a.reloading.p99 / a.steady.p99, 2)}); ` +
          `failed: ${a.reloading.errors} errors + ${a.reloading.non2xx} non-2xx (target 0)`,
      );
    }
    for (const workers of [1, 2]) {
      const r = await once(workers);
      const p99s = percentile(r.steady, 99);
      const p99d = percentile(r.during, 99);
      console.log(
        `${workers} worker(s), per-request timeline, 50 keep-alive clients: ${r.report.ok + r.report.failed} requests, ${r.report.failed} failed (target 0); ` +
          `reload took ${r.reloadMs} ms (${r.during.length} requests during it); ` +
          `p99 steady ${fmt(p99s)} ms, during reload ${fmt(p99d)} ms, ratio ${fmt(p99d / p99s, 2)} (target <= 2)`,
      );
      if (r.report.failed > 0) console.log(`  errors: ${[...new Set(r.report.errors)].join(', ')}`);
    }
  },
};
export default bench;
