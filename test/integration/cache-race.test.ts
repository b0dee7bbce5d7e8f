// The cache-aside race on writes (issue 13), on a real Redis (standalone from TEST_REDIS_URL, and
// a three-node Redis Cluster the test starts) in front of a real database (MySQL from
// TEST_MYSQL_URL, else SQLite): readers that missed the cache and read the row are held, by the
// test's wrapper of the database, between their read and their cache fill while a DELETE or PUT
// completes; then they are let go. Whatever they fill, no later reader may see the old config.
import { expect } from 'chai';
import { Cluster, Redis } from 'ioredis';
import { botConfigSchema, type BotConfig } from '../../lib/store/bot-config.js';
import { CachedBotStore } from '../../lib/store/cached.js';
import { MysqlBotStore } from '../../lib/store/mysql.js';
import { cacheKey, RedisCache, TOMBSTONE } from '../../lib/store/redis-cache.js';
import { SqliteBotStore } from '../../lib/store/sqlite.js';
import type { BotStore } from '../../lib/store/types.js';
import { createLogger } from '../../lib/telemetry/logger.js';
import { runId, sampleConfig } from '../support/bot-config.js';
import { mysqlFromEnv, scratchDatabase } from '../support/mysql.js';
import { haveRedisServer, startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { sleep } from '../support/service.js';

const logger = createLogger({ role: 'cli', level: 'error', format: 'json' });
const READERS = 50;

/**
 * The database, with a hook: the next `n` reads are done at once, then held until release(),
 * i.e. they return a row read before the write that happens meanwhile.
 */
class HeldReads implements BotStore {
  readonly kind: string;
  private held: {
    n: number;
    entered: number;
    read: number;
    onRead: () => void;
    gate: Promise<void>;
  } | null = null;

  constructor(private readonly inner: BotStore) {
    this.kind = inner.kind;
  }

  /** Holds the next `n` reads; `read` resolves once all of them have read their row. */
  hold(n: number, gate: Promise<void>): { read: Promise<void> } {
    let onRead!: () => void;
    const read = new Promise<void>((r) => (onRead = r));
    this.held = { n, entered: 0, read: 0, onRead, gate };
    return { read };
  }

  async get(appId: string, botId: string): Promise<BotConfig | null> {
    const h = this.held && this.held.entered < this.held.n ? this.held : null;
    if (h) h.entered++;
    const row = await this.inner.get(appId, botId);
    if (h) {
      if (++h.read === h.n) h.onRead();
      await h.gate;
    }
    return row;
  }
  create(cfg: BotConfig) {
    return this.inner.create(cfg);
  }
  update(cfg: BotConfig) {
    return this.inner.update(cfg);
  }
  delete(appId: string, botId: string) {
    return this.inner.delete(appId, botId);
  }
  health(timeoutMs: number) {
    return this.inner.health(timeoutMs);
  }
  close() {
    return this.inner.close();
  }
}

function gate(): { open: Promise<void>; release: () => void } {
  let release!: () => void;
  const open = new Promise<void>((r) => (release = r));
  return { open, release };
}

const cfg = (app: string, bot: string, over: Record<string, unknown> = {}) =>
  botConfigSchema.check(sampleConfig(app, bot, over), []);

interface Target {
  clusterAddr: string;
  addr: string;
  password: string;
  /** REDIS_CLIENT_CACHE (the near cache); 0 or absent: none. */
  clientCache?: number;
  raw(): Redis | Cluster;
}

function raceScenarios(target: () => Target): void {
  let db: BotStore;
  let dropDb: () => Promise<void> = async () => {};
  const stores: CachedBotStore[] = [];
  const id = runId();

  before(async () => {
    const mysql = mysqlFromEnv();
    if (mysql) {
      const scratch = await scratchDatabase(mysql);
      dropDb = () => scratch.drop();
      db = await MysqlBotStore.open({
        ...scratch.target,
        poolSize: READERS + 10,
        timeoutMs: 5000,
        logger,
      });
    } else {
      db = await SqliteBotStore.open({ path: ':memory:', logger });
    }
  });
  after(async () => {
    for (const s of stores) await s.close(); // closes the database more than once: harmless
    await dropDb();
  });

  async function open(tombstoneMs?: number): Promise<{ store: CachedBotStore; held: HeldReads }> {
    const t = target();
    const cache = await RedisCache.open({
      clusterAddr: t.clusterAddr,
      addr: t.addr,
      password: t.password,
      expire: 120,
      timeoutMs: 2000,
      tombstoneMs,
      clientCache: t.clientCache,
      logger,
    });
    if (t.clientCache) {
      const end = Date.now() + 5000;
      while (!cache.nearCacheActive && Date.now() < end) await sleep(20);
      expect(cache.nearCacheActive, 'near cache tracking on').to.equal(true);
    }
    const held = new HeldReads(db);
    const store = new CachedBotStore(held, cache, logger);
    stores.push(store);
    return { store, held };
  }

  it(`DELETE while ${READERS} readers hold the row they read before it: none of them refills the cache, and a re-create is not 40053`, async () => {
    const { store, held } = await open();
    const [app, bot] = [`app_del_${id}`, `bot_del_${id}`];
    expect(await store.create(cfg(app, bot))).to.equal(true);
    const g = gate();
    const { read } = held.hold(READERS, g.open);
    const readers = Array.from({ length: READERS }, () => store.get(app, bot));
    await read; // every reader missed the cache and holds the (still existing) row
    expect(await store.delete(app, bot)).to.equal(true);
    g.release();
    const early = await Promise.all(readers);
    expect(early.every((c) => c?.bot_id === bot)).to.equal(true); // they started before the DELETE

    const raw = target().raw();
    const after = await Promise.all(Array.from({ length: READERS }, () => store.get(app, bot)));
    expect(after.filter((c) => c !== null)).to.have.length(0);
    expect(await raw.get(cacheKey(bot))).to.equal(TOMBSTONE);
    expect(await store.create(cfg(app, bot, { flow_ids: ['recreated'] }))).to.equal(true);
    expect((await store.get(app, bot))?.flow_ids).to.deep.equal(['recreated']);
    await raw.del(cacheKey(bot));
  });

  it(`PUT while ${READERS} readers hold the old row: every later read sees the new config`, async () => {
    const { store, held } = await open();
    const [app, bot] = [`app_put_${id}`, `bot_put_${id}`];
    expect(await store.create(cfg(app, bot))).to.equal(true);
    const g = gate();
    const { read } = held.hold(READERS, g.open);
    const readers = Array.from({ length: READERS }, () => store.get(app, bot));
    await read;
    expect(await store.update(cfg(app, bot, { tool_ids: ['new'] }))).to.equal(true);
    g.release();
    await Promise.all(readers);
    const after = await Promise.all(Array.from({ length: READERS }, () => store.get(app, bot)));
    expect(after.map((c) => c?.tool_ids)).to.deep.equal(
      Array.from({ length: READERS }, () => ['new']),
    );
    await target().raw().del(cacheKey(bot));
  });

  it('a reader held longer than a tombstone lives does not fill the cache when it wakes up', async () => {
    const { store, held } = await open(400);
    const [app, bot] = [`app_slow_${id}`, `bot_slow_${id}`];
    expect(await store.create(cfg(app, bot))).to.equal(true);
    const g = gate();
    const { read } = held.hold(1, g.open);
    const reader = store.get(app, bot);
    await read;
    expect(await store.delete(app, bot)).to.equal(true);
    await sleep(600); // the tombstone has expired
    expect(await target().raw().exists(cacheKey(bot))).to.equal(0);
    g.release();
    await reader;
    expect(await target().raw().exists(cacheKey(bot))).to.equal(0);
    expect(await store.get(app, bot)).to.equal(null);
  });

  it(`${READERS} readers looping while a DELETE runs: no read started after it returned sees the config`, async () => {
    const { store } = await open();
    const [app, bot] = [`app_loop_${id}`, `bot_loop_${id}`];
    expect(await store.create(cfg(app, bot))).to.equal(true);
    let deletedAt = Infinity;
    let stop = false;
    const stale: number[] = [];
    const loops = Array.from({ length: READERS }, async () => {
      while (!stop) {
        const started = performance.now();
        const c = await store.get(app, bot);
        if (c && started > deletedAt) stale.push(started - deletedAt);
        // A near-cache hit resolves without I/O: yield, as requests (which arrive by I/O) do.
        await new Promise((r) => setImmediate(r));
      }
    });
    await sleep(100);
    expect(await store.delete(app, bot)).to.equal(true);
    deletedAt = performance.now();
    await sleep(300);
    stop = true;
    await Promise.all(loops);
    expect(stale).to.deep.equal([]);
    await target().raw().del(cacheKey(bot));
  });
}

for (const { title, clientCache } of [
  { title: 'standalone Redis (TEST_REDIS_URL)', clientCache: undefined },
  { title: 'standalone Redis with the near cache (REDIS_CLIENT_CACHE)', clientCache: 1024 },
]) {
  describe(`cache-aside race on writes: ${title}`, function () {
    let raw: Redis;
    before(function () {
      if (!process.env.TEST_REDIS_URL) {
        console.log('      (skipped: TEST_REDIS_URL is not set, e.g. redis://127.0.0.1:6379)');
        this.skip();
      }
      raw = new Redis(process.env.TEST_REDIS_URL!);
    });
    after(() => raw?.disconnect());
    raceScenarios(() => {
      const u = new URL(process.env.TEST_REDIS_URL!);
      return {
        clusterAddr: '',
        addr: `${u.hostname}:${u.port || 6379}`,
        password: decodeURIComponent(u.password),
        ...(clientCache === undefined ? {} : { clientCache }),
        raw: () => raw,
      };
    });
  });
}

describe('cache-aside race on writes: a three-node Redis Cluster', function () {
  let cluster: RedisCluster;
  let raw: Cluster;
  before(async function () {
    if (!haveRedisServer()) {
      console.log('      (skipped: redis-server / redis-cli are not installed)');
      this.skip();
    }
    this.timeout(60000);
    cluster = await startRedisCluster();
    raw = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
  });
  after(async () => {
    raw?.disconnect();
    await cluster?.stop();
  });
  raceScenarios(() => ({ clusterAddr: cluster.addr, addr: '', password: '', raw: () => raw }));
});
