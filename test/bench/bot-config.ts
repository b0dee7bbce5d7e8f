// Issue 5 and 14 figures: GET /agent/v1/bot-config, 2 workers, 50 connections, on SQLite, MySQL
// and MySQL + Redis (cache hit: from the worker's near cache, and with REDIS_CLIENT_CACHE=0 a
// Redis round trip), each side by side with GET /health of the same service in the
// same run (interleaved rounds: health, bot-config, health, ...; medians): throughput, p99, and
// the CPU time per request of the whole process tree (primary, workers, spare; user + system
// from /proc), printed as the ratio to /health's (issue 14: <= 2.5, p99 < 10 ms). MySQL is
// TEST_MYSQL_URL (else mysql://root@127.0.0.1:3306/test, a scratch database dropped afterwards);
// Redis is TEST_REDIS_URL (else redis://127.0.0.1:6379). A backend that cannot be reached is
// reported and skipped.
import { sampleConfig } from '../support/bot-config.js';
import { mysqlEnv, mysqlTargetOrLocal, scratchDatabase } from '../support/mysql.js';
import { request, startService } from '../support/service.js';
import {
  fmt,
  load,
  percentile,
  processTree,
  reachableRedis,
  treeCpuMs,
  type Bench,
  type LoadResult,
} from './lib.js';

interface Case {
  name: string;
  env: Record<string, string>;
}

interface Round extends LoadResult {
  cpuUs: number;
}

async function measure(c: Case, duration: number, rounds: number) {
  const svc = await startService({ env: { ...c.env, SERVICE_WORKERS: '2' } });
  try {
    await svc.waitReady();
    const app = 'bench_app';
    const bot = `bench_bot_${process.pid}`;
    const created = await request(svc.port, '/agent/v1/bot-config', {
      method: 'POST',
      body: JSON.stringify(sampleConfig(app, bot)),
      headers: { 'Content-Type': 'application/json' },
    });
    const code = (JSON.parse(created.body) as { code: number }).code;
    if (code !== 0 && code !== 40053) throw new Error(`${c.name}: create answered ${created.body}`);
    const path = `/agent/v1/bot-config?app_id=${app}&bot_id=${bot}`;
    const check = JSON.parse((await request(svc.port, path)).body) as { code: number };
    if (check.code !== 0) throw new Error(`${c.name}: GET answered code ${check.code}`);
    const url = `http://127.0.0.1:${svc.port}`;
    await load(`${url}${path}`, { duration: 1 }); // warm-up (fills the cache, the pools)
    await load(`${url}/health`, { duration: 1 });
    const tree = processTree(svc.proc.pid!);
    const measured = async (target: string): Promise<Round> => {
      const c0 = treeCpuMs(tree);
      const r = await load(target, { duration });
      return { ...r, cpuUs: ((treeCpuMs(tree) - c0) * 1000) / r.requests };
    };
    const health: Round[] = [];
    const cfg: Round[] = [];
    for (let i = 0; i < rounds; i++) {
      health.push(await measured(`${url}/health`));
      cfg.push(await measured(`${url}${path}`));
    }
    for (const r of [...health, ...cfg]) {
      if (r.errors + r.non2xx > 0)
        throw new Error(`${c.name}: ${r.errors} errors, ${r.non2xx} non-2xx`);
    }
    await request(svc.port, path, { method: 'DELETE' });
    const med = (rs: Round[], k: 'rps' | 'p99' | 'cpuUs') =>
      percentile(
        rs.map((r) => r[k]),
        50,
      );
    // The ratio per round (health and bot-config measured back to back), then its median.
    const ratios = cfg.map((r, i) => r.cpuUs / health[i]!.cpuUs);
    return {
      health: med(health, 'rps'),
      healthP99: med(health, 'p99'),
      healthCpu: med(health, 'cpuUs'),
      rps: med(cfg, 'rps'),
      p99: med(cfg, 'p99'),
      cpu: med(cfg, 'cpuUs'),
      ratio: percentile(ratios, 50),
      ratioSpread: [Math.min(...ratios), Math.max(...ratios)],
    };
  } finally {
    await svc.stop();
  }
}

const bench: Bench = {
  title:
    'GET bot-config on SQLite, MySQL, MySQL + Redis vs GET /health (2 workers, 50 connections)',
  async run() {
    const duration = Number(process.env.BENCH_DURATION ?? 3);
    const rounds = Number(process.env.BENCH_ROUNDS ?? 4);
    const only = process.env.BENCH_CASES?.split(',');
    const cases: Case[] = [{ name: 'SQLite (embedded)', env: {} }];
    const target = mysqlTargetOrLocal();
    let db: Awaited<ReturnType<typeof scratchDatabase>> | undefined;
    try {
      db = await scratchDatabase(target);
      cases.push({ name: 'MySQL', env: mysqlEnv(db.target) });
    } catch (err) {
      console.log(
        `  MySQL at ${target.host}:${target.port} not usable (${(err as Error).message}): MySQL cases skipped`,
      );
    }
    const redis = await reachableRedis();
    if (db && redis.env) {
      const redisEnv = { ...mysqlEnv(db.target), ...redis.env };
      // The default (a hit answered by the worker's near cache), and every hit a round trip.
      cases.push({ name: 'MySQL + Redis', env: redisEnv });
      cases.push({ name: 'MySQL + Redis RTT', env: { ...redisEnv, REDIS_CLIENT_CACHE: '0' } });
    } else if (!redis.env)
      console.log(`  Redis at ${redis.url} not reachable: MySQL + Redis case skipped`);

    const rows: string[] = [];
    try {
      for (const c of cases) {
        if (only && !only.some((o) => c.name.toLowerCase().startsWith(o.toLowerCase()))) continue;
        const r = await measure(c, duration, rounds);
        rows.push(
          `  ${c.name.padEnd(18)} ${fmt(r.rps, 0).padStart(7)} req/s  p99 ${fmt(r.p99, 0).padStart(3)} ms  ${fmt(r.cpu, 0).padStart(4)} µs CPU/req   ` +
            `/health ${fmt(r.health, 0).padStart(6)} req/s  p99 ${fmt(r.healthP99, 0).padStart(3)} ms  ${fmt(r.healthCpu, 0).padStart(3)} µs   ` +
            `CPU ratio ${fmt(r.ratio, 2)} (rounds ${fmt(r.ratioSpread[0]!, 2)}-${fmt(r.ratioSpread[1]!, 2)}; target <= 2.5)  req/s ratio ${fmt(r.rps / r.health, 2)}`,
        );
      }
    } finally {
      await db?.drop();
    }
    console.log(
      `GET /agent/v1/bot-config, 2 workers, 50 connections, ${duration}s x${rounds} interleaved with /health (medians; CPU per request of the whole process tree; p99 target < 10 ms):`,
    );
    for (const row of rows) console.log(row);
  },
};
export default bench;
