// Scale-out: three instances (three primaries of the real CLI, two workers each, their own ports
// and working folders) sharing the test MariaDB and a Redis Cluster started here, behind a real
// HAProxy whose configuration test/support/haproxy.ts generates. Short mode in `npm test` (CI);
// `npm run test:scaleout` (SCALEOUT_FULL=1) runs the same scenarios at a larger scale.
import { expect } from 'chai';
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { PATH, runId, sampleConfig } from '../support/bot-config.js';
import { createBot, CHAT, parseSse, user } from '../support/chat.js';
import { startFakeLlm, type FakeLlm } from '../support/fake-llm.js';
import { ensureHaproxy, Haproxy, haproxyConfig, README_EXAMPLE } from '../support/haproxy.js';
import { mysqlEnv, mysqlFromEnv, scratchDatabase } from '../support/mysql.js';
import { haveRedisServer, startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { freePort, ROOT, sleep, startService, tempDir, type Service } from '../support/service.js';

const FULL = process.env.SCALEOUT_FULL === '1';
const SCALE = FULL
  ? {
      pairs: 5000,
      readers: 20,
      createRounds: 20,
      loaders: 20,
      streams: 9,
      model: 'paced-40-100',
      passes: 2,
    }
  : {
      pairs: 1000,
      readers: 20,
      createRounds: 3,
      loaders: 10,
      streams: 6,
      model: 'paced-20-100',
      passes: 1,
    };
const CHECK = { inter: 500, fall: 1, rise: 2 };
const NAMES = ['i1', 'i2', 'i3'];

interface Reply {
  status: number;
  servedBy: string;
  body: string;
}

function send(
  port: number,
  method: string,
  path: string,
  agent: http.Agent | false,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((res, rej) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        agent,
        timeout: 15_000,
        headers: payload ? { 'Content-Type': 'application/json', ...headers } : headers,
      },
      (r) => {
        let data = '';
        r.on('data', (c: Buffer) => (data += c.toString()));
        r.on('end', () =>
          res({
            status: r.statusCode ?? 0,
            servedBy: String(r.headers['x-served-by']),
            body: data,
          }),
        );
        r.on('error', rej);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', rej);
    if (payload) req.write(payload);
    req.end();
  });
}

const code = (r: Reply) => (JSON.parse(r.body) as { code: number }).code;
const instructOf = (r: Reply) =>
  (JSON.parse(r.body) as { data: { model_config: { instruct: string } } }).data.model_config
    .instruct;
const q = (app: string, bot: string) => `${PATH}?app_id=${app}&bot_id=${bot}`;

interface StreamResult {
  servedBy: string;
  start: number;
  end: number;
  ok: boolean;
  chunks: number;
  error?: string;
}

/** One SSE chat through the load balancer; the answering instance is known from the headers. */
function stream(
  port: number,
  app: string,
  bot: string,
  expectChunks: number,
  onHeaders: (servedBy: string) => void = () => {},
): Promise<StreamResult> {
  const start = Date.now();
  return new Promise((res) => {
    let servedBy = '?';
    const fail = (error: string) =>
      res({ servedBy, start, end: Date.now(), ok: false, chunks: 0, error });
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: CHAT,
        method: 'POST',
        agent: false,
        timeout: 30_000,
        headers: { 'Content-Type': 'application/json', 'x-consumer-username': app },
      },
      (r) => {
        servedBy = String(r.headers['x-served-by']);
        onHeaders(servedBy);
        let raw = '';
        r.on('data', (c: Buffer) => (raw += c.toString()));
        r.on('error', (e) => fail(String(e)));
        r.on('end', () => {
          try {
            const { chunks, done } = parseSse(raw);
            const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
            const n = content.trim() ? content.trim().split(' ').length : 0;
            const last = chunks[chunks.length - 1];
            const ok = r.statusCode === 200 && done && n === expectChunks && last?.code === 0;
            res({
              servedBy,
              start,
              end: Date.now(),
              ok,
              chunks: n,
              error: ok ? undefined : raw.slice(-300),
            });
          } catch (e) {
            fail(`${r.statusCode}: ${String(e)}`);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('stream timed out')));
    req.on('error', (e) => fail(String(e)));
    req.end(JSON.stringify({ bot_id: bot, stream: true, messages: [user('go')] }));
  });
}

interface Failure {
  at: number;
  servedBy: string;
  what: string;
}

/** Keep-alive GET load through the load balancer until stopped; every answer must be code 0. */
function startLoad(port: number, app: string, bot: string, loaders: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: loaders });
  const stats = { requests: 0, failures: [] as Failure[], servedBy: new Map<string, number>() };
  let running = true;
  const loops = Array.from({ length: loaders }, async () => {
    while (running) {
      try {
        const r = await send(port, 'GET', q(app, bot), agent);
        stats.requests++;
        stats.servedBy.set(r.servedBy, (stats.servedBy.get(r.servedBy) ?? 0) + 1);
        if (r.status !== 200 || code(r) !== 0)
          stats.failures.push({
            at: Date.now(),
            servedBy: r.servedBy,
            what: `${r.status} ${r.body.slice(0, 200)}`,
          });
      } catch (e) {
        stats.requests++;
        stats.failures.push({ at: Date.now(), servedBy: '?', what: String(e) });
      }
    }
  });
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return stats;
    },
  };
}

/** Keeps `n` SSE chats open through the load balancer until stopped. */
function startStreams(port: number, app: string, bot: string, n: number, chunks: number) {
  const results: StreamResult[] = [];
  const open = new Map<number, { servedBy?: string; start: number; headersAt?: number }>();
  let running = true;
  let seq = 0;
  const loops = Array.from({ length: n }, async (_, i) => {
    // Staggered, so some stream is always in the middle of its run.
    await sleep(i * 250);
    while (running) {
      const id = seq++;
      const entry: { servedBy?: string; start: number; headersAt?: number } = { start: Date.now() };
      open.set(id, entry);
      const r = await stream(port, app, bot, chunks, (s) => {
        entry.servedBy = s;
        entry.headersAt = Date.now();
      });
      open.delete(id);
      results.push(r);
    }
  });
  return {
    results,
    /** Streams whose answer has begun on `server` and not ended yet. */
    openOn: (server: string) => [...open.values()].filter((e) => e.servedBy === server).length,
    /** Streams on `server` whose answer began less than `ms` ago (most of their run ahead). */
    freshOn: (server: string, ms: number) =>
      [...open.values()].filter((e) => e.servedBy === server && Date.now() - e.headersAt! < ms)
        .length,
    async stop() {
      running = false;
      await Promise.all(loops);
      return results;
    },
  };
}

function skipWithout(ctx: Mocha.Context, what: string, ok: boolean): void {
  if (!ok) {
    console.log(`      (skipped: ${what})`);
    ctx.skip();
  }
}

describe('scale-out: the README example is the configuration the test runs', () => {
  it('README "Scaling out" shows haproxyConfig(README_EXAMPLE) verbatim', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme).to.include('```haproxy\n' + haproxyConfig(README_EXAMPLE) + '```\n');
  });
});

describe(`scale-out: three instances behind HAProxy (${FULL ? 'full' : 'short'} mode)`, function () {
  this.timeout(FULL ? 600_000 : 120_000);
  const id = runId();
  const app = `app_so_${id}`;
  const figures: Record<string, unknown> = {};
  let db: Awaited<ReturnType<typeof scratchDatabase>> | undefined;
  let cluster: RedisCluster | undefined;
  let llm: FakeLlm | undefined;
  let hp: Haproxy | undefined;
  const inst: Service[] = [];
  let env: Record<string, string>;

  const startInstance = async (i: number, port: number, cwd: string) => {
    const svc = await startService({
      cwd,
      detached: true,
      env: { ...env, SERVICE_PORT: String(port) },
    });
    inst[i] = svc;
    await svc.waitReady(30_000);
    return svc;
  };

  before(async function () {
    this.timeout(FULL ? 900_000 : 660_000);
    const mysql = mysqlFromEnv();
    if (!mysql && process.env.REQUIRE_SERVICES === '1')
      throw new Error('TEST_MYSQL_URL is not set');
    skipWithout(this, 'TEST_MYSQL_URL is not set', mysql !== null);
    skipWithout(this, 'redis-server / redis-cli are not installed', haveRedisServer());
    const why = ensureHaproxy();
    if (why && process.env.REQUIRE_SERVICES === '1') throw new Error(why);
    skipWithout(this, why ?? '', why === null);

    db = await scratchDatabase(mysql!);
    [cluster, llm] = await Promise.all([startRedisCluster(3), startFakeLlm()]);
    env = {
      ...mysqlEnv(db.target),
      REDIS_CLUSTER_ADDR: cluster.addr,
      SERVICE_WORKERS: '2',
      SERVICE_GRACEFUL_TIMEOUT: '20000',
    };
    const ports = [await freePort(), await freePort(), await freePort()];
    await Promise.all(ports.map((p, i) => startInstance(i, p, tempDir(`astron-so-${NAMES[i]}-`))));
    const t0 = Date.now();
    hp = await Haproxy.start({
      port: await freePort(),
      servers: ports.map((port, i) => ({ name: NAMES[i]!, host: '127.0.0.1', port })),
      ...CHECK,
      longestStreamSeconds: 120,
    });
    // Servers start UP in haproxy; wait until every one has passed a check.
    for (;;) {
      const st = await hp.showStat();
      if ([...st.values()].every((s) => s.status === 'UP' && /^L7OK/.test(s.check_status ?? '')))
        break;
      if (Date.now() - t0 > 10_000)
        throw new Error(`not all UP: ${JSON.stringify([...st.values()])}`);
      await sleep(100);
    }
  });

  after(async function () {
    this.timeout(60_000);
    if (Object.keys(figures).length)
      console.log(
        `      scale-out figures (${FULL ? 'full' : 'short'}):`,
        JSON.stringify(figures, null, 2),
      );
    await hp?.stop();
    await Promise.all(inst.map((s) => s?.stop('SIGKILL')));
    await Promise.all([cluster?.stop(), llm?.close(), db?.drop()]);
    for (const s of inst) if (s) rmSync(s.cwd, { recursive: true, force: true });
  });

  it(`a write answered by one instance is read at once from the others: 0 stale reads in >= ${SCALE.pairs} pairs, ${SCALE.readers} concurrent readers`, async () => {
    const lb = hp!.port;
    const direct = inst.map((s) => s.port);
    let pairsDirect = 0;
    let pairsLb = 0;
    const stale: string[] = [];
    const writers = new Map<string, number>();
    const lanes = Array.from({ length: SCALE.readers }, async (_, lane) => {
      const lbAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const agents = direct.map(() => new http.Agent({ keepAlive: true, maxSockets: 1 }));
      const bot = `bot_rw${lane}_${id}`;
      let v = 0;
      let exists = false;
      try {
        while (pairsDirect + pairsLb < SCALE.pairs) {
          // POST, PUT, PUT, PUT, DELETE, again: creates, cache rewrites and tombstones.
          const step = v % 5;
          v++;
          const instruct = `v${v}`;
          const cfg = sampleConfig(app, bot, { model_config: { instruct } });
          const w =
            step === 0
              ? await send(lb, 'POST', PATH, lbAgent, cfg)
              : step < 4
                ? await send(lb, 'PUT', PATH, lbAgent, cfg)
                : await send(lb, 'DELETE', q(app, bot), lbAgent);
          expect(code(w), `${step} ${w.body}`).to.equal(0);
          exists = step < 4;
          writers.set(w.servedBy, (writers.get(w.servedBy) ?? 0) + 1);
          const check = (r: Reply, where: string) => {
            const good = exists ? code(r) === 0 && instructOf(r) === instruct : code(r) === 40001;
            if (!good)
              stale.push(
                `${bot} ${instruct} exists=${exists} written by ${w.servedBy}, read on ${where}: ${r.body.slice(0, 200)}`,
              );
          };
          // Every other instance, directly (its port), right after the write's answer ...
          const reads = await Promise.all(
            direct.map((port, i) =>
              NAMES[i] === w.servedBy ? null : send(port, 'GET', q(app, bot), agents[i]!),
            ),
          );
          reads.forEach((r, i) => {
            if (!r) return;
            pairsDirect++;
            check(r, `${NAMES[i]} (direct)`);
          });
          // ... and through the load balancer, which counts when another instance answered.
          const r = await send(lb, 'GET', q(app, bot), lbAgent);
          if (r.servedBy !== w.servedBy) {
            pairsLb++;
            check(r, `${r.servedBy} (via haproxy)`);
          }
        }
      } finally {
        lbAgent.destroy();
        for (const a of agents) a.destroy();
      }
    });
    await Promise.all(lanes);
    figures.staleReads = {
      pairs: pairsDirect + pairsLb,
      directReadPairs: pairsDirect,
      viaHaproxyOtherInstancePairs: pairsLb,
      writesAnsweredBy: Object.fromEntries(writers),
      stale: stale.length,
    };
    expect(stale.slice(0, 5)).to.deep.equal([]);
    expect(pairsDirect + pairsLb).to.be.at.least(SCALE.pairs);
    expect([...writers.keys()].sort()).to.deep.equal(NAMES);
  });

  it(`20 concurrent creates of one bot through the load balancer: exactly one succeeds, the others 40053 (${SCALE.createRounds} rounds)`, async () => {
    const spread = new Map<string, number>();
    for (let round = 0; round < SCALE.createRounds; round++) {
      const bot = `bot_create${round}_${id}`;
      // Twenty connections of their own: haproxy's round robin hands them to all three instances.
      const replies = await Promise.all(
        Array.from({ length: 20 }, () =>
          send(hp!.port, 'POST', PATH, false, sampleConfig(app, bot)),
        ),
      );
      const codes = replies.map(code);
      const by = new Set(replies.map((r) => r.servedBy));
      for (const r of replies) spread.set(r.servedBy, (spread.get(r.servedBy) ?? 0) + 1);
      expect(
        codes.filter((c) => c === 0),
        codes.join(','),
      ).to.have.length(1);
      expect(
        codes.filter((c) => c === 40053),
        codes.join(','),
      ).to.have.length(19);
      expect(by.size, [...by].join(',')).to.equal(3);
      for (const s of inst) expect(code(await send(s.port, 'GET', q(app, bot), false))).to.equal(0);
    }
    figures.concurrentCreates = {
      rounds: SCALE.createRounds,
      perRound: '1 x code 0, 19 x 40053',
      answeredBy: Object.fromEntries(spread),
    };
  });

  it('a rolling restart of the three instances under load and open SSE streams: 0 failed requests, every stream completes, each instance marked DOWN before its drain ends', async () => {
    const chunks = Number(/^paced-(\d+)-/.exec(SCALE.model)![1]);
    await createBot(hp!.port, app, `bot_paced_${id}`, {
      domain: SCALE.model,
      api: `${llm!.url}/v1`,
    });
    await send(hp!.port, 'POST', PATH, false, sampleConfig(app, `bot_load_${id}`));
    const load = startLoad(hp!.port, app, `bot_load_${id}`, SCALE.loaders);
    const streams = startStreams(hp!.port, app, `bot_paced_${id}`, SCALE.streams, chunks);
    const restarts: Record<string, unknown>[] = [];
    try {
      await sleep(1500);
      for (let pass = 0; pass < SCALE.passes; pass++) {
        for (let i = 0; i < inst.length; i++) {
          const old = inst[i]!;
          const name = NAMES[i]!;
          const until = Date.now() + 10_000;
          // Stopped at the start of one of its streams: its drain then lasts most of a stream, and
          // "marked DOWN before the drain ends" is not decided by a stream about to end.
          while (streams.freshOn(name, 400) === 0 && Date.now() < until) await sleep(20);
          const term = Date.now();
          old.proc.kill('SIGTERM');
          const down = await hp!.waitFor(name, 'DOWN', term);
          const exit = await old.exited;
          const exitAt = Date.now();
          expect(exit.code, old.output.slice(-2000)).to.equal(0);
          const streamsOnIt = streams.results.filter(
            (r) => r.servedBy === name && r.start < term && r.end > term,
          );
          await startInstance(i, old.port, old.cwd);
          const up = await hp!.waitFor(name, 'UP', exitAt);
          restarts.push({
            instance: name,
            markedDownMs: down.at - term,
            drainEndedMs: exitAt - term,
            downBeforeExit: down.at < exitAt,
            streamsOpenAtSigterm: streamsOnIt.length,
            backUpMs: up.at - term,
            check: /reason: ([^,]+)/.exec(down.line)?.[1],
          });
          expect(down.at, `${name} DOWN after its exit`).to.be.below(exitAt);
        }
      }
      await sleep(1000);
    } finally {
      await load.stop();
      await streams.stop();
    }
    const st = await hp!.showStat();
    const stops = restarts.map((r) => r as { instance: string; streamsOpenAtSigterm: number });
    const failedStreams = streams.results.filter((r) => !r.ok);
    figures.rollingRestart = {
      requests: load.stats.requests,
      failedRequests: load.stats.failures.length,
      streams: streams.results.length,
      failedStreams: failedStreams.length,
      restarts,
      haproxyRetries: Object.fromEntries(
        [...st].map(([k, v]) => [
          k,
          { retries: v.wretr, redispatches: v.wredis, connErrors: v.econ, respErrors: v.eresp },
        ]),
      ),
    };
    expect(load.stats.failures.slice(0, 5)).to.deep.equal([]);
    expect(failedStreams.slice(0, 5)).to.deep.equal([]);
    // Each stop had streams of its own to finish (else "every stream completes" proves nothing).
    for (const r of stops) expect(r.streamsOpenAtSigterm, r.instance).to.be.at.least(1);
  });

  it('SIGKILL of one instance (primary and workers): only its own connections fail, haproxy marks it DOWN within its check interval', async () => {
    const chunks = Number(/^paced-(\d+)-/.exec(SCALE.model)![1]);
    const load = startLoad(hp!.port, app, `bot_load_${id}`, SCALE.loaders);
    const streams = startStreams(hp!.port, app, `bot_paced_${id}`, SCALE.streams, chunks);
    const victim = NAMES[1]!;
    let kill = 0;
    let killed = 0;
    let down = 0;
    let atDown: Record<string, string> = {};
    let later: Record<string, string> = {};
    let held = 0;
    try {
      await sleep(1000);
      // Streams the victim holds at the kill: these connections are the ones that may fail.
      const until = Date.now() + 10_000;
      while (streams.openOn(victim) === 0 && Date.now() < until) await sleep(50);
      held = streams.openOn(victim);
      kill = Date.now();
      await inst[1]!.stop('SIGKILL');
      killed = Date.now();
      down = (await hp!.waitFor(victim, 'DOWN', kill)).at;
      atDown = (await hp!.showStat()).get(victim)!;
      await sleep(FULL ? 5000 : 2000);
      later = (await hp!.showStat()).get(victim)!;
    } finally {
      await load.stop();
      await streams.stop();
    }
    const failedStreams = streams.results.filter((r) => !r.ok);
    const foreign = [
      ...load.stats.failures.filter((f) => f.servedBy !== victim),
      ...failedStreams.filter((r) => r.servedBy !== victim || r.start > kill),
    ];
    // The streams the kill could break: answered by the victim, begun before it was gone and not
    // ended before the signal. `held`, counted just before the kill, misses a stream whose answer
    // began while the signal was on its way (one run: 2 held, 3 failed, every one the victim's).
    const exposed = streams.results.filter(
      (r) => r.servedBy === victim && r.start <= killed && r.end >= kill,
    ).length;
    figures.sigkill = {
      instance: victim,
      requests: load.stats.requests,
      failedRequests: load.stats.failures.length,
      streams: streams.results.length,
      failedStreams: failedStreams.length,
      streamsOpenOnItAtKill: held,
      streamsOnItWhenKilled: exposed,
      failuresNotOnTheKilledInstance: foreign.length,
      markedDownMs: down - kill,
      checkIntervalMs: CHECK.inter,
      sessionsSentAfterDown: Number(later.stot) - Number(atDown.stot),
      haproxy: {
        retries: later.wretr,
        redispatches: later.wredis,
        connErrors: later.econ,
        respErrors: later.eresp,
      },
    };
    expect(foreign.slice(0, 5)).to.deep.equal([]);
    expect(held, 'a stream open on the victim at the kill').to.be.at.least(1);
    expect(failedStreams.length).to.be.at.most(exposed);
    // A check every `inter` finds the refused port: DOWN within one interval.
    // The test's own event loop, busy with the load, adds its lag to the measure.
    expect(down - kill).to.be.at.most(CHECK.inter + 500);
    expect(Number(later.stot) - Number(atDown.stot)).to.equal(0);
  });
});
