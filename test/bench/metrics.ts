// Issue 4 figures: /metrics scrape latency (the whole cluster through the primary) with 2 and 4
// workers, and /health throughput with metrics on against metrics off in the same run (the
// instrumentation's cost), plus, for information, with the OTLP push on as well.
import { createWorkerMetrics } from '../../lib/telemetry/metrics.js';
import { OtlpReceiver } from '../support/otlp-receiver.js';
import { request, startService, type Service } from '../support/service.js';
import { fmt, hasWrk, load, percentile, procCpuMs, wrkLoad, type Bench } from './lib.js';

/** CPU seconds used so far by these processes (every thread's schedstat run time). */
function cpuSeconds(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + procCpuMs(pid), 0) / 1000;
}

async function settle(svc: Service): Promise<void> {
  await svc.waitReady();
  // Let the workers finish loading the metrics registry (after ready).
  await new Promise((r) => setTimeout(r, 800));
}

async function scrapeLatency(workers: number, scrapes: number): Promise<string> {
  const svc = await startService({ env: { SERVICE_WORKERS: String(workers) } });
  try {
    await settle(svc);
    // Some traffic first, so that every worker has request series.
    await load(`http://127.0.0.1:${svc.port}/health`, { amount: 2000, connections: 10 });
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < scrapes; i++) {
      const t0 = performance.now();
      const r = await request(svc.port, '/metrics');
      ms.push(performance.now() - t0);
      if (r.status !== 200) throw new Error(`scrape answered ${r.status}`);
      bytes = r.body.length;
    }
    return `  ${workers} workers: p50 ${fmt(percentile(ms, 50), 2)} ms, p99 ${fmt(percentile(ms, 99), 2)} ms, max ${fmt(Math.max(...ms), 1)} ms  (${scrapes} sequential scrapes, ${Math.round(bytes / 1024)} KiB each)`;
  } finally {
    await svc.stop();
  }
}

const bench: Bench = {
  title: '/metrics scrape latency; /health throughput with metrics on vs off',
  async run() {
    const DURATION = Number(process.env.BENCH_DURATION ?? 3);
    const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
    console.log(
      'GET /metrics (new connection each; the worker asks the primary, which asks every worker):',
    );
    for (const workers of [2, 4]) console.log(await scrapeLatency(workers, 300));

    // --- throughput: off, on, on+otlp interleaved ----------------------------------
    const receiver = await new OtlpReceiver().start();
    const common = { SERVICE_WORKERS: '2' };
    const cases: [string, Record<string, string>][] = [
      ['metrics off (METRICS_ENABLE=false)', { METRICS_ENABLE: 'false' }],
      ['metrics on (Prometheus)', {}],
      [
        'metrics on + OTLP push every 1 s',
        {
          UPLOAD_METRICS: 'true',
          OTLP_ENDPOINT: receiver.url,
          OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '1000',
          OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '1000',
        },
      ],
      // Two services alike differ too (where their workers' code and heap happen to land): this
      // sizes that noise, as the tracing bench does.
      ['metrics off, a second identical service', { METRICS_ENABLE: 'false' }],
    ];
    const services: Service[] = [];
    for (const [, env] of cases) services.push(await startService({ env: { ...common, ...env } }));
    for (const s of services) await settle(s);
    const tool = hasWrk()
      ? 'wrk -t2 -c50'
      : 'autocannon -c50 in-process (install wrk for better figures)';
    const run = (url: string) =>
      hasWrk() ? wrkLoad(url, { duration: DURATION }) : load(url, { duration: DURATION });
    const rps: number[][] = cases.map(() => []);
    const cpuUs: number[][] = cases.map(() => []);
    try {
      // The order rotates every round: on a shared machine a fixed order skews the figures.
      for (let round = 0; round < ROUNDS; round++) {
        for (let k = 0; k < services.length; k++) {
          const i = (k + round) % services.length;
          const pids = services[i]!.readyWorkerPids();
          const cpu0 = cpuSeconds(pids);
          const r = await run(`http://127.0.0.1:${services[i]!.port}/health`);
          cpuUs[i]!.push(((cpuSeconds(pids) - cpu0) * 1e6) / r.requests);
          if (r.errors + r.non2xx > 0)
            throw new Error(`errors during the throughput run (${cases[i]![0]})`);
          rps[i]!.push(r.rps);
        }
      }
    } finally {
      for (const s of services) await s.stop();
      await receiver.stop();
    }
    const med = rps.map((xs) => percentile(xs, 50));
    console.log(
      `GET /health, 2 workers, ${DURATION}s x${ROUNDS} interleaved (order rotating), ${tool}:`,
    );
    cases.forEach(([name], i) =>
      console.log(
        `  ${name.padEnd(36)}: ${fmt(med[i]!, 0)} req/s (median; runs ${rps[i]!.map((x) => fmt(x, 0)).join(', ')})`,
      ),
    );
    const cost = (i: number) => `${fmt((1 - med[i]! / med[0]!) * 100, 1)}%`;
    const cpu = cpuUs.map((xs) => percentile(xs, 50));
    const cpuCost = (i: number) => `${fmt((cpu[i]! / cpu[0]! - 1) * 100, 1)}%`;
    console.log(`  instrumentation cost (1 - on/off)   : ${cost(1)}  (target <= 10%)`);
    console.log(`  with the OTLP push as well           : ${cost(2)}  (information)`);
    console.log(`  OTLP exports received during the run : ${receiver.received.length}`);
    console.log(
      'worker CPU time per /health request (schedstat, every thread; less disturbed by other load than req/s):',
    );
    cases.forEach(([name], i) =>
      console.log(`  ${name.padEnd(36)}: ${fmt(cpu[i]!, 1)} µs (median)`),
    );
    console.log(`  instrumentation cost (on/off - 1)    : ${cpuCost(1)}  (target <= 10%)`);
    console.log(`  with the OTLP push as well           : ${cpuCost(2)}  (information)`);
    // Per round (each round measures every service back to back), then the median: a slow
    // minute of the machine moves both sides of a round's ratio.
    const perRound = (i: number) => cpuUs[i]!.map((v, r) => (v / cpuUs[0]![r]! - 1) * 100);
    const spread = (xs: number[]) =>
      `median ${fmt(percentile(xs, 50), 1)} % (p25 ${fmt(percentile(xs, 25), 1)} %, p75 ${fmt(percentile(xs, 75), 1)} %)`;
    console.log(`  noise (off vs off, per round)        : ${spread(perRound(3))}`);
    console.log(`  metrics on vs off, per round         : ${spread(perRound(1))}  (target <= 10%)`);

    // --- the per-request work itself, in-process (not disturbed by the load generator) -------
    const m = createWorkerMetrics({ defaults: false });
    const N = 1_000_000;
    const perOp: number[] = [];
    for (let round = 0; round < 5; round++) {
      const t0 = performance.now();
      for (let i = 0; i < N; i++) m.observeRequest('GET', '/health', 200, performance.now());
      perOp.push(((performance.now() - t0) * 1e6) / N);
    }
    m.close();
    console.log(
      `observeRequest (start timestamp + record, what each request adds): ${fmt(percentile(perOp, 50), 0)} ns (median of 5 x ${N})`,
    );
  },
};
export default bench;
