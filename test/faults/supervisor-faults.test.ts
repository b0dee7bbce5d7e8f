// Fault injection against the real CLI: real processes, real signals, real limits. Each scenario
// is one that used to take the whole service down (the primary died, or it killed healthy
// workers). Each asserts: the primary is alive, requests on healthy workers succeed (counted by
// the attributed load), the serving workers converge back to SERVICE_WORKERS, forks stay bounded.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { Client, sampleConfig } from '../support/bot-config.js';
import { startAttributedLoad, type AttributedLoad } from '../support/attributed-load.js';
import { mysqlEnv, mysqlFromEnv, scratchDatabase } from '../support/mysql.js';
import {
  isAlive,
  request,
  sleep,
  startService,
  type LogLine,
  type Service,
} from '../support/service.js';

const HOOKS = { AGENT_TEST_HOOKS: '1' };
const FORKED = /^worker forked$/;

const serving = (svc: Service) => svc.readyWorkerPids().filter(isAlive);

/** N serving workers and N + spares processes, held for a whole second. */
async function converged(svc: Service, n: number, spares: number, timeoutMs = 15000) {
  const ok = () => serving(svc).length === n && svc.childPids().length === n + spares;
  const end = Date.now() + timeoutMs;
  let heldSince = 0;
  while (Date.now() < end) {
    if (!ok()) heldSince = 0;
    else if (!heldSince) heldSince = Date.now();
    else if (Date.now() - heldSince >= 1000) return;
    await sleep(50);
  }
  expect(serving(svc), 'serving workers').to.have.length(n);
  expect(svc.childPids(), 'worker processes').to.have.length(n + spares);
  throw new Error(`${n} serving workers and ${spares} spare(s) did not hold for 1 s`);
}

function configText(lines: Record<string, string>): string {
  return Object.entries(lines)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
}

async function finish(svc: Service, load: AttributedLoad) {
  const r = await load.stop();
  expect(svc.alive, 'primary alive').to.equal(true);
  expect(r.other, `failures not on a killed worker (of ${r.ok} ok)`).to.deep.equal([]);
  expect(r.ok).to.be.greaterThan(50);
  return r;
}

const lineAfter = (svc: Service, re: RegExp, from: number, ms = 10000): Promise<LogLine> =>
  svc.waitForLog((l) => re.test(l.message ?? ''), ms, from);

describe('supervisor faults (real processes, real signals)', function () {
  this.timeout(90_000);
  let svc: Service | undefined;
  afterEach(async () => {
    await svc?.stop('SIGKILL');
    svc = undefined;
  });

  it('fork fails (EMFILE, prlimit on the primary) when replacing a crashed worker: backs off, recovers once the limit is lifted', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_SPARE_WORKERS: '0', LOG_LEVEL: 'debug' },
    });
    await svc.waitReady();
    const primary = svc.proc.pid!;
    const load = startAttributedLoad(svc.port, { clients: 6 });
    await sleep(300);
    const open = readdirSync(`/proc/${primary}/fd`).length;
    const soft = execFileSync('prlimit', [
      '--pid',
      String(primary),
      '--nofile',
      '--noheadings',
      '--output=SOFT',
    ])
      .toString()
      .trim();
    execFileSync('prlimit', ['--pid', String(primary), `--nofile=${open}:`]);
    const [victim] = serving(svc);
    const mark = svc.logs.length;
    load.doom(victim!);
    process.kill(victim!, 'SIGKILL');
    await lineAfter(svc, /^cannot fork a worker \(replace\): .*EMFILE/, mark);
    await sleep(2500);
    const failedForks = svc.count(/^cannot fork a worker/, mark);
    // Backoff from 250 ms doubling: a handful of attempts in 2.5 s, never a storm.
    expect(failedForks).to.be.within(1, 6);
    expect(svc.alive).to.equal(true);
    expect(serving(svc)).to.have.length(1);
    execFileSync('prlimit', ['--pid', String(primary), `--nofile=${soft}:`]);
    await converged(svc, 2, 0, 15000);
    expect(svc.count(FORKED, mark)).to.equal(1);
    await finish(svc, load);
    expect((await svc.stop()).code).to.equal(0);
  });

  it('config.env replaced by a directory, then removed, at SIGHUP: reload aborted, nothing changes; a valid file reloads', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', LOG_LEVEL: 'debug' },
      configText: configText({ SERVICE_NAME: 'Agent' }),
    });
    await svc.waitReady();
    const before = serving(svc).sort();
    const load = startAttributedLoad(svc.port, { clients: 6 });
    const file = join(svc.cwd, 'config.env');
    rmSync(file);
    mkdirSync(file);
    let mark = svc.logs.length;
    svc.proc.kill('SIGHUP');
    await lineAfter(svc, /^reload aborted: cannot read the configuration \(EISDIR/, mark);
    rmSync(file, { recursive: true });
    mark = svc.logs.length;
    svc.proc.kill('SIGHUP');
    await lineAfter(svc, /^reload aborted: config file .* is gone/, mark);
    await sleep(500);
    expect(serving(svc).sort()).to.deep.equal(before);
    expect(svc.count(FORKED, mark)).to.equal(0);
    writeFileSync(file, configText({ SERVICE_NAME: 'Agent' }));
    mark = svc.logs.length;
    svc.proc.kill('SIGHUP');
    await lineAfter(svc, /^rolling reload done/, mark, 20000);
    await converged(svc, 2, 1);
    for (const pid of before) expect(serving(svc)).not.to.include(pid);
    const r = await finish(svc, load);
    expect(r.failed).to.equal(0);
    expect((await svc.stop()).code).to.equal(0);
  });

  for (const spares of [0, 1]) {
    it(`reload with an unusable MySQL user, then kill -9 of a serving worker (${spares} spare): the replacement runs the old configuration`, async function () {
      const target = mysqlFromEnv();
      if (!target) {
        if (process.env.REQUIRE_SERVICES === '1') throw new Error('TEST_MYSQL_URL is not set');
        this.skip();
      }
      const db = await scratchDatabase(target);
      try {
        const good = { ...mysqlEnv(db.target), SERVICE_WORKERS: '2' };
        svc = await startService({
          env: { LOG_LEVEL: 'debug', SERVICE_SPARE_WORKERS: String(spares) },
          configText: configText(good),
        });
        await svc.waitReady();
        const load = startAttributedLoad(svc.port, { clients: 6 });
        writeFileSync(
          join(svc.cwd, 'config.env'),
          configText({ ...good, MYSQL_USER: 'astron_no_such_user' }),
        );
        let mark = svc.logs.length;
        svc.proc.kill('SIGHUP');
        await lineAfter(svc, /^reload aborted: a new worker did not become ready/, mark, 30000);
        await converged(svc, 2, spares);
        const [victim] = serving(svc);
        load.doom(victim!);
        mark = svc.logs.length;
        process.kill(victim!, 'SIGKILL');
        await lineAfter(svc, /^worker ready$/, mark);
        await converged(svc, 2, spares);
        expect(svc.count(/failed to boot/, mark)).to.equal(0);
        expect(svc.count(FORKED, mark)).to.equal(1);
        // The old configuration still reaches the database: a bot config round trip.
        const put = await new Client(svc.port).post(sampleConfig('app_fault', 'bot_fault'));
        expect(put.body.code, JSON.stringify(put.body)).to.equal(0);
        await finish(svc, load);
        expect((await svc.stop()).code).to.equal(0);
      } finally {
        await svc?.stop('SIGKILL');
        await db.drop();
      }
    });
  }

  it('a replacement that cannot open its SQLite file while the other worker serves: retried with backoff, no halt, recovers', async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_SPARE_WORKERS: '0',
        SERVICE_CRASH_BUDGET: '50',
        LOG_LEVEL: 'debug',
      },
    });
    await svc.waitReady();
    const load = startAttributedLoad(svc.port, { clients: 6 });
    const dbFile = join(svc.cwd, 'data', 'agent.db');
    renameSync(dbFile, `${dbFile}.aside`);
    mkdirSync(dbFile);
    const [victim] = serving(svc);
    load.doom(victim!);
    const mark = svc.logs.length;
    process.kill(victim!, 'SIGKILL');
    await lineAfter(svc, /\(replace\) failed to boot/, mark);
    await sleep(3000);
    expect(svc.alive).to.equal(true);
    expect(serving(svc)).to.have.length(1);
    const attempts = svc.count(FORKED, mark);
    // 0, then 100-200, 200-400, 400-800, 800-1600 ms apart: no storm.
    expect(attempts).to.be.within(2, 7);
    rmSync(dbFile, { recursive: true });
    renameSync(`${dbFile}.aside`, dbFile);
    await converged(svc, 2, 0, 15000);
    await finish(svc, load);
    expect((await svc.stop()).code).to.equal(0);
  });

  it('crash budget exceeded by replacements that cannot boot: the halt is graceful (a request in flight on the healthy worker completes), exit 4', async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_SPARE_WORKERS: '0',
        SERVICE_CRASH_BUDGET: '2',
        SERVICE_RESTART_BACKOFF_BASE: '300',
        ...HOOKS,
      },
    });
    await svc.waitReady();
    const dbFile = join(svc.cwd, 'data', 'agent.db');
    renameSync(dbFile, `${dbFile}.aside`);
    mkdirSync(dbFile);
    // A request in flight on one connection (so one worker) that stays; the other is killed.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const healthy = JSON.parse((await request(svc.port, '/health', { agent })).body).pid as number;
    const victim = serving(svc).find((p) => p !== healthy)!;
    const slow = request(svc.port, '/__test/sleep?ms=2500', { agent });
    await sleep(100);
    process.kill(victim, 'SIGKILL');
    const exit = await svc.exited;
    expect(exit.code).to.equal(4);
    expect((await slow).status).to.equal(200);
    expect(svc.output).to.match(/crash budget exceeded/);
    expect(svc.output).not.to.match(/killed by SIGKILL \(sent by the supervisor\)/);
  });

  it('the whole group SIGSTOPped past SERVICE_WORKER_TIMEOUT, then resumed: no worker is killed', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_WORKER_TIMEOUT: '1500', LOG_LEVEL: 'debug' },
      detached: true,
    });
    await svc.waitReady();
    await converged(svc, 2, 1);
    const before = serving(svc).sort();
    const load = startAttributedLoad(svc.port, { clients: 6 });
    await sleep(300);
    const mark = svc.logs.length;
    process.kill(-svc.proc.pid!, 'SIGSTOP');
    await sleep(3000);
    process.kill(-svc.proc.pid!, 'SIGCONT');
    await lineAfter(svc, /^the supervisor did not run for \d+ ms/, mark);
    await sleep(3000);
    expect(svc.count(/^worker hung/, mark)).to.equal(0);
    expect(serving(svc).sort()).to.deep.equal(before);
    expect(svc.count(FORKED, mark)).to.equal(0);
    const r = await finish(svc, load);
    expect(r.failed).to.equal(0);
  });

  it('a worker whose event loop is blocked is still replaced within SERVICE_WORKER_TIMEOUT + 1 s', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_WORKER_TIMEOUT: '1500', ...HOOKS },
    });
    await svc.waitReady();
    const mark = svc.logs.length;
    const t0 = Date.now();
    void request(svc.port, '/__test/block?ms=20000').catch(() => undefined);
    const hung = await lineAfter(svc, /^worker hung/, mark);
    const blockedPid = hung.worker_pid as number;
    expect(Date.now() - t0).to.be.below(1500 + 1000 + 300);
    await converged(svc, 2, 1);
    expect(serving(svc)).not.to.include(blockedPid);
  });

  it('the old worker dies (kill -9) while its reload replacement boots: the pool ends at SERVICE_WORKERS, not one more', async () => {
    svc = await startService({
      env: { SERVICE_WORKERS: '2', SERVICE_SPARE_WORKERS: '0', LOG_LEVEL: 'debug' },
    });
    await svc.waitReady();
    const load = startAttributedLoad(svc.port, { clients: 6 });
    const pidOf = new Map<number, number>();
    for (const l of svc.logs)
      if (l.message === 'worker ready') pidOf.set(l.worker!, l.worker_pid as number);
    const mark = svc.logs.length;
    svc.proc.kill('SIGHUP');
    const forked = await lineAfter(svc, /^worker forked$/, mark);
    expect(forked.purpose).to.equal('reload');
    const fresh = forked.worker_pid as number;
    process.kill(fresh, 'SIGSTOP');
    const old = pidOf.get(forked.replaces as number)!;
    load.doom(old);
    process.kill(old, 'SIGKILL');
    await lineAfter(svc, /the worker booting to replace it takes its place/, mark);
    process.kill(fresh, 'SIGCONT');
    await lineAfter(svc, /^rolling reload done/, mark, 20000);
    await converged(svc, 2, 0);
    // One fresh worker per old one, nothing forked for the crash.
    expect(svc.count(FORKED, mark)).to.equal(2);
    await finish(svc, load);
  });

  it('the old worker is killed as hung while its recycle replacement boots: the pool ends at SERVICE_WORKERS', async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '2',
        SERVICE_SPARE_WORKERS: '0',
        SERVICE_MAX_REQUESTS: '200',
        SERVICE_WORKER_TIMEOUT: '1500',
        LOG_LEVEL: 'debug',
      },
    });
    await svc.waitReady();
    const mark = svc.logs.length;
    const load = startAttributedLoad(svc.port, { clients: 4 });
    const forked = await lineAfter(svc, /^worker forked$/, mark, 30000);
    expect(forked.purpose).to.equal('recycle');
    const fresh = forked.worker_pid as number;
    process.kill(fresh, 'SIGSTOP');
    const old = svc.logs
      .filter((l) => l.message === 'worker ready' && l.worker === forked.replaces)
      .map((l) => l.worker_pid as number)[0]!;
    load.doom(old);
    process.kill(old, 'SIGSTOP');
    await lineAfter(svc, /^worker hung/, mark);
    process.kill(fresh, 'SIGCONT');
    await lineAfter(svc, /^worker ready$/, mark);
    const r = await load.stop();
    expect(r.other).to.deep.equal([]);
    await converged(svc, 2, 0);
    expect(isAlive(old)).to.equal(false);
  });

  it('a recycle whose replacement cannot boot backs off (no fork storm) and the worker keeps serving', async () => {
    svc = await startService({
      env: {
        SERVICE_WORKERS: '1',
        SERVICE_SPARE_WORKERS: '0',
        SERVICE_MAX_REQUESTS: '50',
        LOG_LEVEL: 'debug',
      },
    });
    await svc.waitReady();
    const dbFile = join(svc.cwd, 'data', 'agent.db');
    renameSync(dbFile, `${dbFile}.aside`);
    mkdirSync(dbFile);
    const mark = svc.logs.length;
    const load = startAttributedLoad(svc.port, { clients: 4 });
    await lineAfter(svc, /^recycle failed/, mark);
    await sleep(6000);
    // Before: one attempt per heartbeat (~20 in 15 s). Now 250 ms doubling: at most 6 in 6 s.
    expect(svc.count(FORKED, mark)).to.be.within(2, 6);
    rmSync(dbFile, { recursive: true });
    renameSync(`${dbFile}.aside`, dbFile);
    await lineAfter(svc, /\(recycle\)$/, mark, 20000);
    const r = await finish(svc, load);
    expect(r.failed).to.equal(0);
    await converged(svc, 1, 0);
  });

  it('a drain that ends in time exits 0 even when the OTLP collector hangs (deadlines nest)', async () => {
    // A collector that accepts and never answers: the final OTLP flush would wait its timeout.
    const sockets: net.Socket[] = [];
    const collector = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    const otlpPort = (collector.address() as net.AddressInfo).port;
    try {
      svc = await startService({
        env: {
          SERVICE_WORKERS: '1',
          SERVICE_GRACEFUL_TIMEOUT: '3000',
          OTLP_ENABLE: 'true',
          UPLOAD_METRICS: 'true',
          OTLP_ENDPOINT: `http://127.0.0.1:${otlpPort}`,
          OTLP_METRIC_EXPORT_TIMEOUT_MILLIS: '3000',
          OTLP_METRIC_EXPORT_INTERVAL_MILLIS: '60000',
          ...HOOKS,
        },
      });
      await svc.waitReady();
      const slow = request(svc.port, '/__test/sleep?ms=2000');
      await sleep(100);
      const t0 = Date.now();
      svc.proc.kill('SIGTERM');
      expect((await slow).status).to.equal(200);
      const exit = await svc.exited;
      expect(exit.code, svc.output.slice(-2000)).to.equal(0);
      expect(Date.now() - t0).to.be.below(3000 + 500);
      expect(svc.output).not.to.match(/graceful timeout reached/);
    } finally {
      for (const s of sockets) s.destroy();
      collector.close();
    }
  });
});
