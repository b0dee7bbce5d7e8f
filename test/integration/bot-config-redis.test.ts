// The Redis cache in front of the bot-config store, through the real CLI and read back from
// Redis directly: standalone (TEST_REDIS_URL, with MySQL from TEST_MYSQL_URL), a Redis the test
// stops mid-test, and a three-node Redis Cluster the test starts itself.
import { expect } from 'chai';
import { Cluster, Redis } from 'ioredis';
import {
  Client,
  clientsOnTwoWorkers,
  runId,
  sampleConfig,
  specScenarios,
  twoWorkers,
  workerExits,
} from '../support/bot-config.js';
import { TOMBSTONE } from '../../lib/store/redis-cache.js';
import { mysqlEnv, mysqlFromEnv, scratchDatabase } from '../support/mysql.js';
import {
  haveRedisServer,
  startRedisCluster,
  startRedisServer,
  type RedisCluster,
} from '../support/redis-cluster.js';
import { request, sleep, startService, type Service } from '../support/service.js';

const key = (bot: string) => `spark_bot:bot_config:${bot}`;
const EXPIRE = 120;

function skipWithout(ctx: Mocha.Context, what: string, ok: boolean): void {
  if (!ok) {
    console.log(`      (skipped: ${what})`);
    ctx.skip();
  }
}

async function until<T>(
  what: string,
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 10000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < end) {
    last = await fn();
    if (ok(last)) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

/**
 * Cache behaviour checked against Redis itself: population on read, sliding TTL (and keys
 * without one left alone), rewrite on update, eviction on delete, extras kept in Redis only,
 * the app-less key (D8) and an unreadable cached value (40003).
 */
function cacheScenarios(ctx: () => { svc: Service; redis: Redis | Cluster }): void {
  const id = runId();
  const c = () => new Client(ctx().svc.port);
  const r = () => ctx().redis;
  // Keys this suite may leave behind (one of them without expiry) in a shared Redis.
  after(async () => {
    for (const name of ['pop', 'slide', 'hit', 'upd', 'd8', 'bad', 'xw', 'race'])
      await r().del(key(`bot_${name}_${id}`));
  });

  it('read-through: POST does not fill the cache, the first GET does (value = the config, TTL = REDIS_EXPIRE)', async () => {
    const [app, bot] = [`app_pop_${id}`, `bot_pop_${id}`];
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    expect(await r().exists(key(bot))).to.equal(0);
    const got = await c().get(app, bot);
    expect(got.body.code).to.equal(0);
    const cached = await r().get(key(bot));
    expect(cached).to.be.a('string');
    expect(JSON.parse(cached!)).to.deep.equal(got.body.data);
    expect(Object.keys(JSON.parse(cached!))).to.deep.equal([
      'app_id',
      'bot_id',
      'knowledge_config',
      'model_config',
      'regular_config',
      'tool_ids',
      'mcp_server_ids',
      'mcp_server_urls',
      'flow_ids',
    ]);
    const ttl = await r().ttl(key(bot));
    expect(ttl).to.be.within(EXPIRE - 5, EXPIRE);
  });

  it('sliding TTL: a hit resets the expiry to REDIS_EXPIRE; a key without expiry is left without', async () => {
    const [app, bot] = [`app_slide_${id}`, `bot_slide_${id}`];
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    await c().get(app, bot);
    await r().expire(key(bot), 7);
    expect(await r().ttl(key(bot))).to.be.at.most(7);
    expect((await c().get(app, bot)).body.code).to.equal(0);
    expect(await r().ttl(key(bot))).to.be.within(EXPIRE - 5, EXPIRE);
    await r().persist(key(bot));
    expect((await c().get(app, bot)).body.code).to.equal(0);
    expect(await r().ttl(key(bot))).to.equal(-1);
  });

  it('served from the cache: a value changed in Redis is what GET answers (the database is not read)', async () => {
    const [app, bot] = [`app_hit_${id}`, `bot_hit_${id}`];
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    const first = (await c().get(app, bot)).body.data as Record<string, unknown>;
    await r().set(key(bot), JSON.stringify({ ...first, flow_ids: ['only_in_redis'] }), 'EX', 60);
    expect(((await c().get(app, bot)).body.data as Record<string, unknown>).flow_ids).to.deep.equal(
      ['only_in_redis'],
    );
  });

  it('update rewrites the cached value (extras kept there), delete leaves a short tombstone', async () => {
    const [app, bot] = [`app_upd_${id}`, `bot_upd_${id}`];
    expect((await c().post(sampleConfig(app, bot))).body.code).to.equal(0);
    await c().get(app, bot);
    const put = await c().put(
      sampleConfig(app, bot, { tool_ids: ['new_tool'], extra_field: { kept: 'in redis' } }),
    );
    expect(put.body.code).to.equal(0);
    const cached = JSON.parse((await r().get(key(bot)))!) as Record<string, unknown>;
    expect(cached).to.deep.equal(put.body.data);
    expect(cached.tool_ids).to.deep.equal(['new_tool']);
    expect(cached.extra_field).to.deep.equal({ kept: 'in redis' });
    expect(await r().ttl(key(bot))).to.be.within(EXPIRE - 5, EXPIRE);
    // Extras live in Redis only (spec 6.1): from the cache they come back, from the table not.
    expect((await c().get(app, bot)).body.data).to.have.property('extra_field');
    await r().del(key(bot));
    const fromDb = await c().get(app, bot);
    expect(fromDb.body.data).not.to.have.property('extra_field');
    expect((fromDb.body.data as Record<string, unknown>).tool_ids).to.deep.equal(['new_tool']);

    expect((await c().del(app, bot)).body.code).to.equal(0);
    expect(await r().get(key(bot))).to.equal(TOMBSTONE);
    expect(await r().pttl(key(bot))).to.be.within(1, 10_000);
    expect((await c().get(app, bot)).body.code).to.equal(40001);
    expect(await r().get(key(bot))).to.equal(TOMBSTONE);
  });

  it('the key has no app_id (D8): a cached config of another app makes POST 40053 and GET 40001', async () => {
    const bot = `bot_d8_${id}`;
    await r().set(key(bot), JSON.stringify(sampleConfig(`app_owner_${id}`, bot)), 'EX', 60);
    expect((await c().post(sampleConfig(`app_other_${id}`, bot))).body.code).to.equal(40053);
    expect((await c().get(`app_other_${id}`, bot)).body.code).to.equal(40001);
    await r().del(key(bot));
  });

  it('a cached value that is not JSON: 40003 "invalid bot config"', async () => {
    const bot = `bot_bad_${id}`;
    await r().set(key(bot), '{not json', 'EX', 60);
    expect((await c().get(`app_bad_${id}`, bot)).body).to.deep.equal({
      code: 40003,
      message: 'invalid bot config',
      data: null,
    });
    await r().del(key(bot));
  });

  it('2 workers: created through one, read through the other (which fills the cache), read back through the first', async () => {
    const [a, b] = await twoWorkers(ctx().svc.port);
    try {
      expect(a.pid).not.to.equal(b.pid);
      const [app, bot] = [`app_xw_${id}`, `bot_xw_${id}`];
      expect((await a.post(sampleConfig(app, bot))).body.code).to.equal(0);
      expect((await b.get(app, bot)).body.data).to.deep.include({ app_id: app, bot_id: bot });
      expect(await r().exists(key(bot))).to.equal(1);
      expect((await a.put(sampleConfig(app, bot, { flow_ids: ['x'] }))).body.code).to.equal(0);
      expect(((await b.get(app, bot)).body.data as Record<string, unknown>).flow_ids).to.deep.equal(
        ['x'],
      );
      expect((await b.del(app, bot)).body.code).to.equal(0);
      expect((await a.get(app, bot)).body.code).to.equal(40001);
      expect([await a.identify(), await b.identify()]).to.deep.equal([a.pid, b.pid]);
      expect(a.oneConnection && b.oneConnection).to.equal(true);
    } finally {
      a.close();
      b.close();
    }
  });

  it('20 concurrent creates of one bot through two workers: exactly one success', async () => {
    const clients = await clientsOnTwoWorkers(ctx().svc.port, 10);
    try {
      const cfg = sampleConfig(`app_race_${id}`, `bot_race_${id}`);
      const codes = (await Promise.all(clients.map((x) => x.post(cfg)))).map((x) => x.body.code);
      expect(codes.filter((x) => x === 0)).to.have.length(1);
      expect(codes.filter((x) => x === 40053)).to.have.length(19);
    } finally {
      for (const x of clients) x.close();
    }
  });
}

describe('bot-config with MySQL + Redis (standalone, TEST_REDIS_URL)', function () {
  let svc: Service;
  let redis: Redis;
  let db: Awaited<ReturnType<typeof scratchDatabase>>;

  before(async function () {
    const mysql = mysqlFromEnv();
    skipWithout(this, 'TEST_MYSQL_URL is not set', mysql !== null);
    skipWithout(
      this,
      'TEST_REDIS_URL is not set, e.g. redis://127.0.0.1:6379',
      Boolean(process.env.TEST_REDIS_URL),
    );
    const u = new URL(process.env.TEST_REDIS_URL!);
    redis = new Redis(process.env.TEST_REDIS_URL!);
    db = await scratchDatabase(mysql!);
    svc = await startService({
      env: {
        ...mysqlEnv(db.target),
        REDIS_ADDR: `${u.hostname}:${u.port || 6379}`,
        REDIS_PASSWORD: decodeURIComponent(u.password),
        REDIS_EXPIRE: String(EXPIRE),
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
        LOG_LEVEL: 'debug',
      },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
    await db?.drop();
    redis?.disconnect();
  });

  it('runs as mysql+redis', () => {
    const kinds = svc.logs
      .filter((l) => l.message === 'bot config store ready')
      .map((l) => l.store);
    expect(kinds).to.deep.equal(['mysql+redis', 'mysql+redis']);
  });
  describe('spec section 12 scenarios', () => specScenarios(() => svc));
  describe('cache behaviour', () => cacheScenarios(() => ({ svc, redis })));
});

describe('bot-config when Redis stops mid-test (a redis-server of the test)', function () {
  let server: Awaited<ReturnType<typeof startRedisServer>>;
  let svc: Service;
  const id = runId();

  before(async function () {
    skipWithout(this, 'redis-server / redis-cli are not installed', haveRedisServer());
    server = await startRedisServer();
    svc = await startService({
      env: {
        REDIS_ADDR: server.addr,
        REDIS_TIMEOUT: '500',
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
      },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
    await server?.cleanup();
  });

  it('reads are still answered (from the database); writes that cannot touch the cache are refused and not committed; all resumes when Redis is back', async function () {
    this.timeout(90000);
    const c = new Client(svc.port);
    const [app, bot] = [`app_rs_${id}`, `bot_rs_${id}`];
    expect((await c.post(sampleConfig(app, bot))).body.code).to.equal(0);
    expect((await c.get(app, bot)).body.code).to.equal(0);
    expect(server.cli('EXISTS', key(bot))).to.equal('1');
    const pids = svc.readyWorkerPids().sort();

    await server.stop();
    const [a, b] = await twoWorkers(svc.port);
    try {
      for (const w of [a, b]) {
        const r = await w.get(app, bot);
        expect(r.body.code, `worker ${w.pid}`).to.equal(0);
        expect(r.body.data).to.deep.include({ app_id: app, bot_id: bot });
      }
    } finally {
      a.close();
      b.close();
    }
    const put = await c.put(sampleConfig(app, bot, { tool_ids: ['while_down'] }));
    expect(put.body).to.deep.equal({ code: 40041, message: 'Ping Redis failed', data: null });
    const del = await c.del(app, bot);
    expect(del.body).to.deep.equal({
      code: 40051,
      message: 'failed to delete bot config',
      data: null,
    });
    const after = await c.get(app, bot);
    expect(after.body.code).to.equal(0);
    expect((after.body.data as Record<string, unknown>).tool_ids).to.deep.equal([
      'tool_001',
      'tool_002',
    ]); // not committed
    // A create needs no cache write: the database's unique index decides.
    expect((await c.post(sampleConfig(app, `${bot}_new`))).body.code).to.equal(0);
    expect((await c.post(sampleConfig(app, bot))).body.code).to.equal(40053);
    expect(
      svc.logs.some(
        (l) => l.level === 'warn' && /redis unavailable during read/.test(l.message ?? ''),
      ),
    ).to.equal(true);
    expect((await request(svc.port, '/health')).status).to.equal(200);
    expect(workerExits(svc)).to.deep.equal([]);
    expect(svc.readyWorkerPids().sort()).to.deep.equal(pids);

    await server.start(); // same port, empty
    const ok = await until(
      'PUT to work again',
      () => c.put(sampleConfig(app, bot, { tool_ids: ['after'] })),
      (r) => r.body.code === 0,
      15000,
    );
    expect(ok.body.code).to.equal(0);
    expect(JSON.parse(server.cli('GET', key(bot))).tool_ids).to.deep.equal(['after']);
    // Both workers reconnected: a read through each fills the cache (a fresh bot each attempt:
    // a deleted one's tombstone keeps it out of the cache for a while).
    let attempt = 0;
    await until(
      'both workers to use Redis again',
      async () => {
        const codes = [];
        attempt++;
        for (let i = 0; i < 2; i++) {
          const cfg = sampleConfig(app, `${bot}_w${i}_${attempt}`);
          await c.post(cfg);
          await c.get(app, cfg.bot_id);
          codes.push(server.cli('EXISTS', key(cfg.bot_id)));
          await c.del(app, cfg.bot_id);
        }
        return codes;
      },
      (codes) => codes.every((x) => x === '1'),
      15000,
    );
    expect((await c.del(app, bot)).body.code).to.equal(0);
    expect(server.cli('GET', key(bot))).not.to.match(/bot_id/); // the delete's tombstone
    expect(workerExits(svc)).to.deep.equal([]);
  });
});

describe('bot-config with a Redis Cluster (three nodes started by the test)', function () {
  let cluster: RedisCluster;
  let svc: Service;
  let client: Cluster;
  const id = runId();

  before(async function () {
    this.timeout(60000);
    skipWithout(this, 'redis-server / redis-cli are not installed', haveRedisServer());
    cluster = await startRedisCluster(3);
    client = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
    svc = await startService({
      env: {
        REDIS_CLUSTER_ADDR: cluster.addr,
        // The cluster wins over a standalone address (this one points nowhere).
        REDIS_ADDR: '127.0.0.1:1',
        REDIS_EXPIRE: String(EXPIRE),
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
        LOG_LEVEL: 'debug',
      },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
    client?.disconnect();
    await cluster?.stop();
  });

  it('runs as sqlite+redis-cluster, and spreads keys over the nodes', async () => {
    const kinds = svc.logs
      .filter((l) => l.message === 'bot config store ready')
      .map((l) => l.store);
    expect(kinds).to.deep.equal(['sqlite+redis-cluster', 'sqlite+redis-cluster']);
    const c = new Client(svc.port);
    for (let i = 0; i < 12; i++) {
      expect(
        (await c.post(sampleConfig(`app_spread_${id}`, `bot_spread${i}_${id}`))).body.code,
      ).to.equal(0);
      expect((await c.get(`app_spread_${id}`, `bot_spread${i}_${id}`)).body.code).to.equal(0);
    }
    const sizes = cluster.nodes.map((n) => Number(n.cli('DBSIZE')));
    expect(sizes.filter((s) => s > 0).length, `keys per node: ${sizes.join(', ')}`).to.be.at.least(
      2,
    );
  });
  describe('spec section 12 scenarios', () => specScenarios(() => svc));
  describe('cache behaviour', () => cacheScenarios(() => ({ svc, redis: client })));
});
