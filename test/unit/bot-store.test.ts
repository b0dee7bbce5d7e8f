import { expect } from 'chai';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AgentError } from '../../lib/agent/errors.js';
import { validateSettings } from '../../lib/config/settings.js';
import { createApp } from '../../lib/http/app.js';
import type { AppDeps } from '../../lib/http/deps.js';
import {
  botConfigSchema,
  decodeColumn,
  encodeColumns,
  fromCacheValue,
  fromRow,
  toCacheValue,
  type BotConfig,
} from '../../lib/store/bot-config.js';
import { CachedBotStore, type BotCache } from '../../lib/store/cached.js';
import { MemoryBotStore } from '../../lib/store/memory.js';
import { TOMBSTONE } from '../../lib/store/redis-cache.js';
import { Snowflake } from '../../lib/store/snowflake.js';
import { SqliteBotStore } from '../../lib/store/sqlite.js';
import type { BotStore } from '../../lib/store/types.js';
import { createLogger } from '../../lib/telemetry/logger.js';
import { ROOT, tempDir } from '../support/service.js';

const logger = createLogger({ role: 'cli', level: 'error', format: 'json' });
const cfg = (app: string, bot: string, over: Record<string, unknown> = {}): BotConfig =>
  botConfigSchema.check(
    {
      app_id: app,
      bot_id: bot,
      model_config: { instruct: 'hi' },
      regular_config: {},
      tool_ids: ['t1'],
      ...over,
    },
    [],
  );

describe('bot config codecs', () => {
  it('fills the defaults of spec 6.1, drops unknown nested keys, keeps top-level extras', () => {
    const c = botConfigSchema.check(
      {
        app_id: 'a',
        bot_id: 'b',
        model_config: { plan: { enabled: true, domain: 'd' } },
        regular_config: { match: {} },
        extra: 1,
      },
      [],
    );
    expect(c.knowledge_config).to.deep.equal({ score_threshold: 0.3, top_k: 3 });
    expect(c.model_config.plan).to.deep.equal({
      api: '',
      domain: 'd',
      sk: '',
      parameter: { max_tokens: 2048, question_type: 'not_knowledge', temperature: 0.5, top_k: 4 },
      patch_id: [],
      support_function_call: false,
    });
    expect(c.regular_config).to.deep.equal({
      match: { repoId: [], docId: [] },
      rag: { type: 'AIUI-RAG2' },
    });
    expect(c.extra).to.equal(1);
    expect(Object.keys(c).slice(0, 3)).to.deep.equal(['app_id', 'bot_id', 'knowledge_config']);
  });

  it("writes the original's double encoding and reads both encodings", () => {
    const c = cfg('a', 'b');
    const py = encodeColumns(c, 'python');
    expect(JSON.parse(py.tool_ids)).to.equal('["t1"]');
    expect(JSON.parse(py.knowledge_config)).to.equal('{"score_threshold":0.3,"top_k":3}');
    expect(encodeColumns(cfg('a', 'b', { flow_ids: ['x', 'y'] }), 'python').flow_ids).to.equal(
      JSON.stringify('["x", "y"]'),
    );
    const plain = encodeColumns(c, 'plain');
    expect(plain.tool_ids).to.equal('["t1"]');
    for (const enc of [py, plain]) {
      expect(fromRow({ app_id: 'a', bot_id: 'b', ...enc })).to.deep.equal(c);
    }
    expect(decodeColumn(Buffer.from('[1]'), 'x')).to.deep.equal([1]);
    expect(decodeColumn({ already: 'parsed' }, 'x')).to.deep.equal({ already: 'parsed' });
    expect(() => decodeColumn('"{nope"', 'model_config')).to.throw(
      'column model_config does not hold JSON',
    );
    expect(() => fromRow({ app_id: 'a', bot_id: 'b', ...plain, tool_ids: '{"a":1}' })).to.throw(
      /validation error for BotConfig: tool_ids/,
    );
  });

  it('cache values: JSON by alias with extras; not JSON is 40003', () => {
    const c = cfg('a', 'b', { extra: { x: 1 } });
    expect(fromCacheValue(toCacheValue(c))).to.deep.equal(c);
    try {
      fromCacheValue('{oops');
      expect.fail('no error');
    } catch (err) {
      expect(err).to.be.instanceOf(AgentError);
      expect((err as AgentError).code).to.equal(40003);
    }
  });

  it('snowflake ids are unique and increasing, also in one millisecond', () => {
    const s = new Snowflake(5);
    const ids = Array.from({ length: 10000 }, () => s.next(1_700_000_000_000));
    expect(new Set(ids).size).to.equal(10000);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).to.equal(true);
    expect(ids[ids.length - 1]! < 2n ** 63n).to.equal(true);
  });
});

/** The BotStore contract, for any backend. */
function storeContract(open: () => Promise<BotStore>) {
  let store: BotStore;
  beforeEach(async () => {
    store = await open();
  });
  afterEach(async () => {
    await store.close();
  });

  it('create, get, update, delete with ownership by app_id', async () => {
    expect(await store.get('a', 'b')).to.equal(null);
    expect(await store.create(cfg('a', 'b'))).to.equal(true);
    expect(await store.get('a', 'b')).to.deep.equal(cfg('a', 'b'));
    expect(await store.get('other', 'b')).to.equal(null);
    expect(await store.create(cfg('a', 'b'))).to.equal(false);
    expect(await store.create(cfg('other', 'b')), 'bot_id is unique across apps').to.equal(false);
    expect(await store.update(cfg('other', 'b'))).to.equal(false);
    expect(await store.update(cfg('a', 'b', { tool_ids: ['t2'] }))).to.equal(true);
    expect(
      await store.update(cfg('a', 'b', { tool_ids: ['t2'] })),
      'an update to the same values still finds the row',
    ).to.equal(true);
    expect((await store.get('a', 'b'))!.tool_ids).to.deep.equal(['t2']);
    expect(await store.delete('other', 'b')).to.equal(false);
    expect(await store.delete('a', 'b')).to.equal(true);
    expect(await store.delete('a', 'b')).to.equal(false);
    expect(await store.get('a', 'b')).to.equal(null);
  });

  it('drops extra keys, as a SQL row does', async () => {
    await store.create(cfg('a', 'x', { extra: 1 }));
    expect(await store.get('a', 'x')).not.to.have.property('extra');
  });
}

describe('MemoryBotStore', () => storeContract(async () => new MemoryBotStore()));
describe('SqliteBotStore (:memory:)', () =>
  storeContract(() => SqliteBotStore.open({ path: ':memory:', logger })));

describe('SqliteBotStore on a file shared by several connections', () => {
  it('WAL mode; what one connection writes the other reads; duplicates refused across connections', async () => {
    const path = join(tempDir('astron-sqlite-'), 'sub', 'agent.db');
    const [s1, s2] = await Promise.all([
      SqliteBotStore.open({ path, logger }),
      SqliteBotStore.open({ path, logger }),
    ]);
    try {
      expect(await s1.create(cfg('a', 'b'))).to.equal(true);
      expect(await s2.get('a', 'b')).to.deep.equal(cfg('a', 'b'));
      expect(await s2.create(cfg('a', 'b'))).to.equal(false);
      expect(await s2.update(cfg('a', 'b', { flow_ids: ['f'] }))).to.equal(true);
      expect((await s1.get('a', 'b'))!.flow_ids).to.deep.equal(['f']);
    } finally {
      await s1.close();
      await s2.close();
    }
  });
  it("getText's remembered answers: another connection's commit and this one's own writes are seen by the next read", async () => {
    const path = join(tempDir('astron-sqlite-'), 'agent.db');
    const [s1, s2] = await Promise.all([
      SqliteBotStore.open({ path, logger }),
      SqliteBotStore.open({ path, logger }),
    ]);
    const flows = async (s: SqliteBotStore, app = 'a') => {
      const t = await s.getText(app, 'b');
      return t === null ? null : (JSON.parse(t) as BotConfig).flow_ids;
    };
    try {
      expect(await s1.create(cfg('a', 'b', { flow_ids: ['1'] }))).to.equal(true);
      expect(await flows(s1)).to.deep.equal(['1']);
      expect(await flows(s1)).to.deep.equal(['1']); // remembered
      expect(await flows(s1, 'other_app')).to.equal(null);
      expect(await s2.update(cfg('a', 'b', { flow_ids: ['2'] }))).to.equal(true);
      expect(await flows(s1)).to.deep.equal(['2']);
      await s1.update(cfg('a', 'b', { flow_ids: ['3'] }));
      expect(await flows(s1)).to.deep.equal(['3']);
      expect(await flows(s2)).to.deep.equal(['3']);
      expect(await s2.delete('a', 'b')).to.equal(true);
      expect(await flows(s1)).to.equal(null);
      expect(await s1.create(cfg('a', 'b', { flow_ids: ['4'] }))).to.equal(true);
      expect(await flows(s2)).to.deep.equal(['4']);
      expect(await flows(s1)).to.deep.equal(['4']);
      await s1.delete('a', 'b');
      expect(await flows(s1)).to.equal(null);
    } finally {
      await s1.close();
      await s2.close();
    }
  });
  it('several processes opening one fresh file at the same moment all start (no SQLITE_BUSY)', async function () {
    // Workers of a first `start` open the file together. Switching a fresh file to WAL answers
    // SQLITE_BUSY without SQLite's busy wait when another connection is doing the same, which
    // once failed a worker's boot. 8 processes open 40 fresh files, each file at the same
    // moment in every process (a rare race: about 1 open in 60 failed before the fix).
    this.timeout(120_000);
    const mod = pathToFileURL(join(ROOT, 'lib', 'store', 'sqlite.ts')).href;
    const script = `
      const { SqliteBotStore } = await import(${JSON.stringify(mod)});
      await import('better-sqlite3'); // loaded before the first open, as in a worker
      const [dir, at, files] = process.argv.slice(1);
      const logger = { debug() {}, info() {}, warn() {}, error() {} };
      const nap = new Int32Array(new SharedArrayBuffer(4));
      const failures = [];
      for (let k = 0; k < Number(files); k++) {
        const t = Number(at) + k * 40;
        if (t - Date.now() > 2) Atomics.wait(nap, 0, 0, t - Date.now() - 2);
        while (Date.now() < t) {}
        try {
          const s = await SqliteBotStore.open({ path: dir + '/' + k + '.db', logger });
          await s.close();
        } catch (e) {
          failures.push(k + ': ' + e.code + ' ' + e.message);
        }
      }
      console.log(JSON.stringify(failures));`;
    const dir = tempDir('astron-sqlite-race-');
    const at = String(Date.now() + 4000); // tsx's start-up included
    const runs = Array.from(
      { length: 8 },
      () =>
        new Promise<string[]>((resolve) => {
          execFile(
            process.execPath,
            ['--import=tsx', '--input-type=module', '-e', script, dir, at, '40'],
            { timeout: 60_000, cwd: ROOT },
            (err, stdout) =>
              resolve(err ? [`exit: ${err.message}`] : (JSON.parse(stdout) as string[])),
          );
        }),
    );
    expect((await Promise.all(runs)).flat()).to.deep.equal([]);
  });
});

/** A cache whose operations can be made to fail, recording what was done. */
class FakeCache implements BotCache {
  readonly mode = 'standalone' as const;
  readonly data = new Map<string, string>();
  readonly ops: string[] = [];
  readonly fillWindowMs = 5000;
  down = false;
  failEvict = false;
  private op(name: string): void {
    this.ops.push(name);
    if (this.down) throw new Error('Connection is closed.');
  }
  async get(bot: string) {
    this.op(`get ${bot}`);
    const v = this.data.get(bot);
    return v === undefined || v === TOMBSTONE ? null : v;
  }
  async populate(bot: string, v: string) {
    this.op(`populate ${bot}`);
    if (!this.data.has(bot)) this.data.set(bot, v);
  }
  async put(bot: string, v: string) {
    this.op(`put ${bot}`);
    this.data.set(bot, v);
  }
  async tombstone(bot: string) {
    this.op(`tombstone ${bot}`);
    if (this.failEvict) throw new Error('tombstone failed');
    this.data.set(bot, TOMBSTONE);
  }
  async ping() {
    this.op('ping');
  }
  async close() {}
}

describe('CachedBotStore (memory database, fake cache)', () => {
  let db: MemoryBotStore;
  let cache: FakeCache;
  let store: CachedBotStore;
  beforeEach(() => {
    db = new MemoryBotStore();
    cache = new FakeCache();
    store = new CachedBotStore(db, cache, logger);
  });

  it('reads through: a miss is populated, a hit is answered from the cache', async () => {
    await store.create(cfg('a', 'b'));
    expect(cache.data.has('b')).to.equal(false);
    expect(await store.get('a', 'b')).to.deep.equal(cfg('a', 'b'));
    expect(JSON.parse(cache.data.get('b')!)).to.deep.equal(cfg('a', 'b'));
    await db.delete('a', 'b'); // the cache now answers alone
    expect(await store.get('a', 'b')).to.deep.equal(cfg('a', 'b'));
    expect(await store.get('other', 'b')).to.equal(null);
    expect(store.kind).to.equal('memory+redis');
  });

  it('cache down: reads and creates use the database', async () => {
    await db.create(cfg('a', 'b'));
    cache.down = true;
    expect(await store.get('a', 'b')).to.deep.equal(cfg('a', 'b'));
    expect(await store.create(cfg('a', 'c'))).to.equal(true);
    expect(await store.create(cfg('a', 'c'))).to.equal(false);
  });

  it('update: tombstones before the write, rewrites after; a failed tombstone is 40041 and nothing is written', async () => {
    await store.create(cfg('a', 'b'));
    await store.get('a', 'b');
    cache.ops.length = 0;
    expect(await store.update(cfg('a', 'b', { tool_ids: ['new'] }))).to.equal(true);
    expect(cache.ops).to.deep.equal(['get b', 'tombstone b', 'put b']);
    expect(JSON.parse(cache.data.get('b')!).tool_ids).to.deep.equal(['new']);

    cache.failEvict = true;
    try {
      await store.update(cfg('a', 'b', { tool_ids: ['never'] }));
      expect.fail('no error');
    } catch (err) {
      expect((err as AgentError).code).to.equal(40041);
    }
    expect((await db.get('a', 'b'))!.tool_ids).to.deep.equal(['new']);
    expect(await store.update(cfg('other', 'b')), 'not found before touching the cache').to.equal(
      false,
    );
  });

  it('delete: a failed tombstone is 40051 and the row stays; else tombstoned twice around the delete', async () => {
    await store.create(cfg('a', 'b'));
    cache.failEvict = true;
    try {
      await store.delete('a', 'b');
      expect.fail('no error');
    } catch (err) {
      expect((err as AgentError).code).to.equal(40051);
    }
    expect(await db.get('a', 'b')).not.to.equal(null);
    cache.failEvict = false;
    cache.ops.length = 0;
    expect(await store.delete('a', 'b')).to.equal(true);
    expect(cache.ops).to.deep.equal(['get b', 'tombstone b', 'tombstone b']);
    expect(cache.data.get('b')).to.equal(TOMBSTONE);
    expect(await store.get('a', 'b')).to.equal(null);
    expect(await store.create(cfg('a', 'b')), 'a tombstone is not an existing config').to.equal(
      true,
    );
  });

  it('a population never overwrites a newer value (SET NX semantics)', async () => {
    await store.create(cfg('a', 'b'));
    cache.data.set('b', toCacheValue(cfg('a', 'b', { tool_ids: ['newer'] })));
    expect((await store.get('a', 'b'))!.tool_ids).to.deep.equal(['newer']);
  });
});

describe('the app with a memory store (no process, no database)', () => {
  it('answers the bot-config routes', async () => {
    const settings = validateSettings({});
    const deps: AppDeps = {
      settings,
      logger,
      workerId: 1,
      startedAt: Date.now(),
      lifecycle: { draining: false, stopping: false },
      botStore: new MemoryBotStore(),
    };
    const server = http.createServer(createApp(deps));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        headers: body ? { 'Content-Type': 'application/json' } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      return {
        status: res.status,
        body: (await res.json()) as { code: number; message: string; data: unknown },
      };
    };
    try {
      const c = { app_id: 'a', bot_id: 'b', model_config: {}, regular_config: {} };
      expect((await call('POST', '/agent/v1/bot-config', c)).body.code).to.equal(0);
      expect((await call('POST', '/agent/v1/bot-config', c)).body.code).to.equal(40053);
      expect(
        (await call('GET', '/agent/v1/bot-config?app_id=a&bot_id=b')).body.data,
      ).to.deep.include({ bot_id: 'b' });
      const v = await call('GET', '/agent/v1/bot-config?app_id=a');
      expect([v.status, v.body.code, v.body.message]).to.deep.equal([
        200,
        40002,
        'missing, bot_id, Field required',
      ]);
      expect((await call('DELETE', '/agent/v1/bot-config?app_id=a&bot_id=b')).body).to.deep.equal({
        code: 0,
        message: 'success',
        data: null,
      });
    } finally {
      server.close();
    }
  });
});
