// The chaos run: keep-alive HTTP load and SSE chat streams against a fake LLM while random faults
// hit the service (kill -9 and SIGSTOP/SIGCONT of a worker, SIGHUP, SIGTTIN/SIGTTOU, a restart of
// the Redis server the run started, config.env flipped between valid and invalid). Bounded in
// time; the seed is printed and accepted, so a run can be replayed.
//
//   npm run chaos                         2 minutes, a random seed
//   npm run chaos -- --duration 20 --seed 42
//
// Exit 0 when the targets hold: 0 failures other than those on a killed worker's own
// connections, the primary alive, the pool back at SERVICE_WORKERS, counters monotonic.
import http from 'node:http';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startAttributedLoad, type AttributedReport } from '../support/attributed-load.js';
import { createBot } from '../support/chat.js';
import { startFakeLlm } from '../support/fake-llm.js';
import { startRedisServer } from '../support/redis-cluster.js';
import { isAlive, request, sleep, startService, type Service } from '../support/service.js';

export interface ChaosOptions {
  durationMs: number;
  seed: number;
  workers?: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  durationMs: number;
  faults: Record<string, number>;
  load: AttributedReport;
  primaryAlive: boolean;
  finalServing: number;
  finalProcesses: number;
  expectedServing: number;
  rss: [number, number];
  /** The primary's RSS at each quarter of the run. */
  rssQuarters: number[];
  fds: [number, number];
  scrapes: number;
  counterDecreases: string[];
}

/** mulberry32: small, seedable, good enough to pick faults. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS: [string, number][] = [
  ['kill9', 3],
  ['stopcont', 2],
  ['sighup', 2],
  ['ttin', 1],
  ['ttou', 1],
  ['redis-restart', 1],
  ['config-flip', 1],
];

function primaryStats(pid: number): { rss: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
  return { rss, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** One SSE chat stream on the client's own connection; throws unless it ends cleanly. */
function chatOn(port: number, agent: http.Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({
      bot_id: 'bot_chaos',
      stream: true,
      messages: [{ role: 'user', content: 'go' }],
    });
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/agent/v1/chat/completions',
        method: 'POST',
        agent,
        timeout: 15000,
        headers: { 'content-type': 'application/json', 'x-consumer-username': 'app_chaos' },
      },
      (res) => {
        let raw = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (raw += c));
        res.on('error', reject);
        res.on('end', () => {
          if (
            res.statusCode === 200 &&
            raw.endsWith('data: [DONE]\n\n') &&
            raw.includes('"code":0')
          )
            resolve();
          else reject(new Error(`chat stream did not end cleanly: ${raw.slice(-200)}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Per-series values of the counters the run watches, from one scrape. */
function counters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (
      !/^(http_requests_total|server_request_total|astron_agent_worker_restarts_total)\{/.test(line)
    )
      continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const random = prng(opts.seed);
  const workers = opts.workers ?? 2;
  const llm = await startFakeLlm();
  const redis = await startRedisServer();
  const valid = [
    `SERVICE_WORKERS=${workers}`,
    'SERVICE_WORKER_TIMEOUT=3000',
    'SERVICE_GRACEFUL_TIMEOUT=8000',
    'SERVICE_CRASH_BUDGET=1000',
    `REDIS_ADDR=${redis.addr}`,
    'REDIS_TIMEOUT=500',
    'LOG_LEVEL=info',
  ].join('\n');
  const invalid = `${valid}\nSERVICE_GRACEFUL_TIMEOUT=soon`;
  let svc: Service | undefined;
  const faults: Record<string, number> = {};
  const stopped = new Set<number>();
  try {
    svc = await startService({ configText: valid, env: { SERVICE_WORKERS: '' }, detached: true });
    await svc.waitReady(30000);
    const port = svc.port;
    const s = svc;
    await createBot(port, 'app_chaos', 'bot_chaos', { domain: 'paced-8-60', api: `${llm.url}/v1` });
    const load = startAttributedLoad(port, {
      clients: 12,
      extra: (agent) => chatOn(port, agent),
      extraShare: 0.3,
      // Its own stream: the fault sequence of a seed must not depend on request timing.
      random: prng(opts.seed ^ 0x9e3779b9),
    });
    // The workers the pool ends itself (hung) or that die: their connections may fail.
    let seen = 0;
    const watch = setInterval(() => {
      for (; seen < s.logs.length; seen++) {
        const l = s.logs[seen]!;
        if (
          typeof l.worker_pid === 'number' &&
          /^worker hung|^worker \d+ killed/.test(l.message ?? '')
        )
          load.doom(l.worker_pid);
      }
    }, 50);
    await sleep(1500);
    const pid = s.proc.pid!;
    const start = primaryStats(pid);
    let last = new Map<string, number>();
    let scrapes = 0;
    const decreases: string[] = [];
    let scraping = true;
    const scraper = (async () => {
      while (scraping) {
        try {
          const r = await request(port, '/metrics', { timeoutMs: 5000 });
          if (r.status === 200) {
            scrapes++;
            const now = counters(r.body);
            for (const [k, v] of now) {
              const before = last.get(k);
              if (before !== undefined && v < before) decreases.push(`${k}: ${before} -> ${v}`);
            }
            last = new Map([...last, ...now]);
          }
        } catch {
          // a scrape on a killed worker's connection: the next one counts
        }
        await sleep(1000);
      }
    })();

    const end = Date.now() + opts.durationMs;
    const total = FAULTS.reduce((n, [, w]) => n + w, 0);
    const pick = (): string => {
      let r = random() * total;
      for (const [k, w] of FAULTS) if ((r -= w) < 0) return k;
      return FAULTS[0]![0];
    };
    // Workers above SERVICE_WORKERS: a reload with a valid config.env sets the count back to it.
    let scale = 0;
    let configValid = true;
    const rssQuarters: number[] = [];
    const quarter = setInterval(() => {
      if (s.alive) rssQuarters.push(primaryStats(pid).rss);
    }, opts.durationMs / 4);
    while (Date.now() < end) {
      await sleep(1000 + random() * 2500);
      if (!s.alive) break;
      const kind = pick();
      const serving = s.readyWorkerPids().filter((p) => isAlive(p) && !stopped.has(p));
      const victim = serving[Math.floor(random() * serving.length)];
      switch (kind) {
        case 'kill9':
          if (victim === undefined) continue;
          load.doom(victim);
          process.kill(victim, 'SIGKILL');
          break;
        case 'stopcont': {
          if (victim === undefined) continue;
          const ms = 300 + random() * 4200;
          // Past the hung timeout the pool kills it: its connections are then lost.
          if (ms > 2500) load.doom(victim);
          stopped.add(victim);
          process.kill(victim, 'SIGSTOP');
          setTimeout(() => {
            stopped.delete(victim);
            if (isAlive(victim)) process.kill(victim, 'SIGCONT');
          }, ms).unref();
          break;
        }
        case 'sighup':
          s.proc.kill('SIGHUP');
          if (configValid) scale = 0;
          break;
        case 'ttin':
          if (scale >= 2) continue;
          scale++;
          s.proc.kill('SIGTTIN');
          break;
        case 'ttou':
          // Never below SERVICE_WORKERS: a single worker's port closes while it is replaced.
          if (scale <= 0) continue;
          scale--;
          s.proc.kill('SIGTTOU');
          break;
        case 'redis-restart':
          await redis.stop();
          await sleep(500 + random() * 1000);
          await redis.start();
          break;
        case 'config-flip': {
          const bad = random() < 0.5;
          writeFileSync(join(s.cwd, 'config.env'), bad ? invalid : valid);
          s.proc.kill('SIGHUP');
          configValid = !bad;
          if (configValid) scale = 0;
          break;
        }
      }
      faults[kind] = (faults[kind] ?? 0) + 1;
      log(
        `  ${new Date().toISOString().slice(11, 23)} ${kind}${victim && (kind === 'kill9' || kind === 'stopcont') ? ` ${victim}` : ''}`,
      );
    }

    clearInterval(quarter);
    // Settle: every stopped worker resumed, a valid config reloaded (SERVICE_WORKERS again).
    await sleep(5000);
    writeFileSync(join(s.cwd, 'config.env'), valid);
    const mark = s.logs.length;
    s.proc.kill('SIGHUP');
    await s
      .waitForLog((l) => l.message === 'rolling reload done', 60000, mark)
      .catch(() => undefined);
    const settledBy = Date.now() + 20000;
    const converged = () =>
      s.readyWorkerPids().filter(isAlive).length === workers &&
      s.childPids().length === workers + 1;
    while (Date.now() < settledBy && !converged()) await sleep(100);
    await sleep(1000);
    const report = await load.stop();
    scraping = false;
    await scraper;
    clearInterval(watch);
    const endStats = s.alive ? primaryStats(pid) : { rss: 0, fds: 0 };
    // The service's own log, to read a failure against (CHAOS_LOG=path).
    if (process.env.CHAOS_LOG) writeFileSync(process.env.CHAOS_LOG, s.stdout.join('\n'));
    return {
      seed: opts.seed,
      durationMs: opts.durationMs,
      faults,
      load: report,
      primaryAlive: s.alive,
      finalServing: s.readyWorkerPids().filter(isAlive).length,
      finalProcesses: s.childPids().length,
      expectedServing: workers,
      rss: [start.rss, endStats.rss],
      rssQuarters,
      fds: [start.fds, endStats.fds],
      scrapes,
      counterDecreases: decreases,
    };
  } finally {
    for (const p of stopped) if (isAlive(p)) process.kill(p, 'SIGCONT');
    if (svc?.alive) await svc.stop('SIGTERM', 15000);
    await svc?.stop('SIGKILL');
    await redis.cleanup();
    await llm.close();
  }
}

export function formatReport(r: ChaosReport): string {
  const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;
  const faultList = Object.entries(r.faults)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return [
    `chaos run: seed ${r.seed}, ${Math.round(r.durationMs / 1000)} s`,
    `faults injected: ${faultList || 'none'}`,
    `requests: ${r.load.ok + r.load.failed} sent, ${r.load.failed} failed (${r.load.ownFailures} on a killed worker's own connections, ${r.load.other.length} other)`,
    ...r.load.other.slice(0, 10).map((o) => `  other failure: ${o}`),
    `primary alive: ${r.primaryAlive ? 'yes' : 'NO'}`,
    `workers at the end: ${r.finalServing} serving (SERVICE_WORKERS ${r.expectedServing}), ${r.finalProcesses} processes (spare included)`,
    `primary RSS: ${mb(r.rss[0])} -> ${mb(r.rss[1])} (each quarter: ${r.rssQuarters.map(mb).join(', ')}); open fds: ${r.fds[0]} -> ${r.fds[1]}`,
    `counters monotonic over ${r.scrapes} scrapes: ${r.counterDecreases.length === 0 ? 'yes' : `NO (${r.counterDecreases.slice(0, 3).join('; ')})`}`,
  ].join('\n');
}

export function chaosPassed(r: ChaosReport): boolean {
  return (
    r.primaryAlive &&
    r.load.other.length === 0 &&
    r.finalServing === r.expectedServing &&
    r.finalProcesses === r.expectedServing + 1 &&
    r.counterDecreases.length === 0 &&
    r.fds[1] - r.fds[0] <= 5
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '120' },
      seed: { type: 'string' },
      workers: { type: 'string', default: '2' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'npm run chaos [-- --duration SECONDS (120)] [--seed N (random)] [--workers N (2)]\n',
    );
    process.exit(0);
  }
  const seed =
    values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  process.stdout.write(`chaos: seed ${seed} (replay with --seed ${seed})\n`);
  const r = await runChaos({
    durationMs: Number(values.duration) * 1000,
    seed,
    workers: Number(values.workers),
  });
  process.stdout.write(`${formatReport(r)}\n`);
  process.exit(chaosPassed(r) ? 0 : 1);
}
