// The bot-config API on MySQL/MariaDB (TEST_MYSQL_URL), through the real CLI: table creation,
// the original's column encoding, spec section 12, cross-worker reads, concurrent creates, and
// a database that goes away and comes back.
import { expect } from 'chai';
import type { RowDataPacket } from 'mysql2/promise';
import { MysqlBotStore } from '../../lib/store/mysql.js';
import { createLogger } from '../../lib/telemetry/logger.js';
import { botConfigSchema } from '../../lib/store/bot-config.js';
import {
  Client,
  clientsOnTwoWorkers,
  runId,
  sampleConfig,
  specScenarios,
  twoWorkers,
  workerExits,
} from '../support/bot-config.js';
import {
  mysqlEnv,
  mysqlFromEnv,
  scratchDatabase,
  TcpProxy,
  type MysqlTarget,
} from '../support/mysql.js';
import { request, sleep, startService, type Service } from '../support/service.js';

function requireMysql(ctx: Mocha.Context): MysqlTarget {
  const t = mysqlFromEnv();
  if (!t) {
    console.log(
      '      (skipped: TEST_MYSQL_URL is not set, e.g. mysql://root@127.0.0.1:3306/test)',
    );
    ctx.skip();
  }
  return t!;
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

describe('bot-config API on MySQL (3 workers, a scratch database)', function () {
  let svc: Service;
  let db: Awaited<ReturnType<typeof scratchDatabase>>;
  const id = runId();

  before(async function () {
    const t = requireMysql(this);
    db = await scratchDatabase(t);
    svc = await startService({
      env: { ...mysqlEnv(db.target), SERVICE_WORKERS: '3', SERVICE_SCHEDULING: 'rr' },
    });
    await svc.waitReady();
  });
  after(async () => {
    await svc?.stop();
    await db?.drop();
  });

  it('creates the bot_config table once at start: 3 workers, one "created table" line, spec 6.2 columns', async () => {
    const created = svc.logs.filter((l) => l.message === 'created table bot_config');
    expect(created, 'exactly one worker creates the table').to.have.length(1);
    expect(created[0]!.role).to.equal('worker');
    const [cols] = await db.conn.query<RowDataPacket[]>(
      `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, IS_NULLABLE AS nullable FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'bot_config' ORDER BY ORDINAL_POSITION`,
    );
    expect(cols.map((c) => c.name)).to.deep.equal([
      'id',
      'app_id',
      'bot_id',
      'knowledge_config',
      'model_config',
      'regular_config',
      'tool_ids',
      'mcp_server_ids',
      'mcp_server_urls',
      'flow_ids',
      'create_at',
      'update_at',
      'is_deleted',
    ]);
    const byName = Object.fromEntries(cols.map((c) => [c.name, c]));
    expect(byName.id.type).to.match(/^bigint/);
    expect(byName.app_id.type).to.equal('varchar(32)');
    expect(byName.bot_id.type).to.equal('varchar(40)');
    expect(cols.every((c) => c.nullable === 'NO')).to.equal(true);
    const [idx] = await db.conn.query<RowDataPacket[]>(
      `SELECT INDEX_NAME AS name, NON_UNIQUE AS nonUnique FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'bot_config' AND COLUMN_NAME = 'bot_id'`,
    );
    expect(idx.map((i) => `${i.name}:${i.nonUnique}`).sort()).to.deep.equal([
      'union_app_bot:1',
      'uniq_bot_id:0',
    ]);
  });

  describe('spec section 12 scenarios', () => specScenarios(() => svc));

  it('writes JSON columns double-encoded as the original does; reads that and plain JSON', async () => {
    const c = new Client(svc.port);
    expect((await c.post(sampleConfig(`app_enc_${id}`, `bot_enc_${id}`))).body.code).to.equal(0);
    const [[row]] = await db.conn.query<RowDataPacket[]>(
      `SELECT JSON_TYPE(model_config) AS t, JSON_UNQUOTE(model_config) AS model_text, JSON_UNQUOTE(tool_ids) AS tools_text,
              JSON_UNQUOTE(knowledge_config) AS knowledge_text, is_deleted, create_at
         FROM bot_config WHERE bot_id = ?`,
      [`bot_enc_${id}`],
    );
    expect(row!.t).to.equal('STRING'); // a JSON string holding JSON text
    expect(JSON.parse(row!.model_text as string).instruct).to.equal('You are a helpful assistant');
    expect(row!.tools_text).to.equal('["tool_001", "tool_002"]'); // Python's json.dumps
    expect(row!.knowledge_text).to.equal('{"score_threshold":0.3,"top_k":3}'); // pydantic's dump
    expect(row!.is_deleted).to.equal(0);

    // Rows written by others: plain JSON, and the Python service's double encoding with spaces.
    const plain = sampleConfig(`app_plain_${id}`, `bot_plain_${id}`, { tool_ids: ['p1'] });
    const cfg = botConfigSchema.check(plain, []);
    await db.conn.query(
      `INSERT INTO bot_config VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NOW(), NOW(), 0)`,
      [
        '1',
        cfg.app_id,
        cfg.bot_id,
        JSON.stringify(cfg.knowledge_config),
        JSON.stringify(cfg.model_config),
        JSON.stringify(cfg.regular_config),
        '["p1"]',
        '[]',
        '[]',
        '[]',
      ],
    );
    await db.conn.query(
      `INSERT INTO bot_config VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NOW(), NOW(), 0)`,
      [
        '2',
        `app_py_${id}`,
        `bot_py_${id}`,
        JSON.stringify('{"score_threshold": 0.7, "top_k": 2}'),
        JSON.stringify('{"instruct": "from python"}'),
        JSON.stringify('{"match": {"repoId": ["r"], "docId": []}, "rag": {"type": "CBG-RAG"}}'),
        JSON.stringify('["py1", "py2"]'),
        JSON.stringify('[]'),
        JSON.stringify('[]'),
        JSON.stringify('[]'),
      ],
    );
    const p = await c.get(`app_plain_${id}`, `bot_plain_${id}`);
    expect(p.body.code).to.equal(0);
    expect(p.body.data).to.deep.equal({
      ...cfg,
      tool_ids: ['p1'],
      mcp_server_ids: [],
      mcp_server_urls: [],
      flow_ids: [],
    });
    const py = await c.get(`app_py_${id}`, `bot_py_${id}`);
    expect(py.body.code).to.equal(0);
    const d = py.body.data as Record<string, Record<string, unknown>>;
    expect(d.knowledge_config).to.deep.equal({ score_threshold: 0.7, top_k: 2 });
    expect(d.model_config!.instruct).to.equal('from python');
    expect((d.model_config!.plan as Record<string, unknown>).domain).to.equal(''); // defaults filled in
    expect(d.regular_config!.rag).to.deep.equal({ type: 'CBG-RAG' });
    expect(d.tool_ids).to.deep.equal(['py1', 'py2']);

    // A column that is a JSON string but not JSON text inside: 40500 "Data processing error".
    await db.conn.query(`UPDATE bot_config SET model_config = ? WHERE bot_id = ?`, [
      JSON.stringify('{not json'),
      `bot_py_${id}`,
    ]);
    const broken = await c.get(`app_py_${id}`, `bot_py_${id}`);
    expect(broken.body.code).to.equal(40500);
    expect(broken.body.message).to.equal(
      'Agent internal service error: Data processing error - column model_config does not hold JSON',
    );
  });

  it('spec D9: an app_id of 33 characters passes validation and fails at insert with 40500', async () => {
    const r = await new Client(svc.port).post(sampleConfig('a'.repeat(33), `bot_d9_${id}`));
    expect(r.body.code).to.equal(40500);
    expect(r.body.message).to.match(
      /^Agent internal service error: Unexpected error - Data too long for column 'app_id'/,
    );
  });

  it('2 workers: created through one worker, read, updated and deleted through the other', async () => {
    const [a, b] = await twoWorkers(svc.port);
    try {
      expect(a.pid).not.to.equal(b.pid);
      const [app, bot] = [`app_xw_${id}`, `bot_xw_${id}`];
      expect((await a.post(sampleConfig(app, bot))).body.code).to.equal(0);
      expect((await b.get(app, bot)).body.data).to.deep.include({ app_id: app, bot_id: bot });
      expect((await b.put(sampleConfig(app, bot, { flow_ids: ['f2'] }))).body.code).to.equal(0);
      expect(((await a.get(app, bot)).body.data as Record<string, unknown>).flow_ids).to.deep.equal(
        ['f2'],
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

  it('20 concurrent creates of one bot through two workers: exactly one success (the unique index decides)', async () => {
    const clients = await clientsOnTwoWorkers(svc.port, 10);
    try {
      const cfg = sampleConfig(`app_race_${id}`, `bot_race_${id}`);
      const codes = (await Promise.all(clients.map((c) => c.post(cfg)))).map((r) => r.body.code);
      expect(codes.filter((c) => c === 0)).to.have.length(1);
      expect(codes.filter((c) => c === 40053)).to.have.length(19);
      const [[n]] = await db.conn.query<RowDataPacket[]>(
        'SELECT COUNT(*) AS n FROM bot_config WHERE bot_id = ?',
        [`bot_race_${id}`],
      );
      expect(Number(n!.n)).to.equal(1);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it("a table made by the original's DDL (no unique bot_id): creates take a database lock, still exactly one wins", async () => {
    await db.conn.query(`CREATE TABLE legacy_bot_config LIKE bot_config`);
    await db.conn.query('ALTER TABLE legacy_bot_config DROP INDEX uniq_bot_id');
    const logger = createLogger({ role: 'cli', level: 'error', format: 'json' });
    // Two stores = two pools, as two workers (or two hosts) would have.
    const stores = await Promise.all(
      [0, 1].map(() =>
        MysqlBotStore.open({
          ...db.target,
          poolSize: 10,
          timeoutMs: 5000,
          logger,
          table: 'legacy_bot_config',
        }),
      ),
    );
    try {
      const cfg = botConfigSchema.check(sampleConfig(`app_legacy_${id}`, `bot_legacy_${id}`), []);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => stores[i % 2]!.create(cfg)),
      );
      expect(results.filter(Boolean)).to.have.length(1);
      const [[n]] = await db.conn.query<RowDataPacket[]>(
        'SELECT COUNT(*) AS n FROM legacy_bot_config',
      );
      expect(Number(n!.n)).to.equal(1);
      expect(await stores[1]!.get(cfg.app_id, cfg.bot_id)).to.deep.equal(cfg);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });
});

describe('bot-config API when MySQL is unreachable (a TCP proxy the test cuts)', function () {
  let target: MysqlTarget;
  let db: Awaited<ReturnType<typeof scratchDatabase>>;
  let proxy: TcpProxy;
  const id = runId();

  before(async function () {
    target = requireMysql(this);
    db = await scratchDatabase(target);
    proxy = await new TcpProxy(target.host, target.port).start();
  });
  after(async () => {
    await proxy?.stop();
    await db?.drop();
  });

  it('answers a clear 40500 while the database is gone, stays up, and recovers when it is back', async () => {
    const svc = await startService({
      env: {
        ...mysqlEnv(db.target, proxy),
        SERVICE_WORKERS: '2',
        SERVICE_SCHEDULING: 'rr',
        MYSQL_TIMEOUT: '2000',
      },
    });
    try {
      await svc.waitReady();
      const c = new Client(svc.port);
      const [app, bot] = [`app_down_${id}`, `bot_down_${id}`];
      expect((await c.post(sampleConfig(app, bot))).body.code).to.equal(0);
      const pids = svc.readyWorkerPids().sort();

      await proxy.cut();
      for (let i = 0; i < 4; i++) {
        // Both workers (round-robin), reads and writes.
        const r = i % 2 ? await c.get(app, bot) : await c.post(sampleConfig(app, `${bot}_${i}`));
        expect(r.status).to.equal(200);
        expect(r.body.code).to.equal(40500);
        expect(r.body.message).to.match(
          /^Agent internal service error: Unexpected error - .*(ECONNREFUSED|connect|Connection lost)/,
        );
      }
      const health = await request(svc.port, '/health');
      expect(health.status).to.equal(200);
      expect(workerExits(svc)).to.deep.equal([]);
      expect(svc.readyWorkerPids().sort()).to.deep.equal(pids);

      await proxy.restore();
      await until(
        'reads to recover',
        () => c.get(app, bot),
        (r) => r.body.code === 0,
      );
      await until(
        'both workers to recover',
        () => Promise.all([c.get(app, bot), c.get(app, bot)]),
        (rs) => rs.every((r) => r.body.code === 0),
      );
      expect((await c.post(sampleConfig(app, `${bot}_after`))).body.code).to.equal(0);
      expect(workerExits(svc)).to.deep.equal([]);
    } finally {
      await svc.stop();
    }
  });

  it('starts while the database is down (40500 meanwhile) and creates the table when it is back', async () => {
    await proxy.cut();
    const fresh = await scratchDatabase(target);
    const svc = await startService({
      env: { ...mysqlEnv(fresh.target, proxy), SERVICE_WORKERS: '2', MYSQL_TIMEOUT: '1000' },
    });
    try {
      await svc.waitReady();
      expect(svc.logs.some((l) => /MySQL is not reachable/.test(l.message ?? ''))).to.equal(true);
      const c = new Client(svc.port);
      expect((await c.get(`app_late_${id}`, `bot_late_${id}`)).body.code).to.equal(40500);
      await proxy.restore();
      await until(
        'the first create after the database is back',
        () => c.post(sampleConfig(`app_late_${id}`, `bot_late_${id}`)),
        (r) => r.body.code !== 40500,
      );
      expect((await c.get(`app_late_${id}`, `bot_late_${id}`)).body.code).to.equal(0);
      const [tables] = await fresh.conn.query<RowDataPacket[]>("SHOW TABLES LIKE 'bot_config'");
      expect(tables).to.have.length(1);
    } finally {
      await svc.stop();
      await fresh.drop();
      await proxy.restore().catch(() => {});
    }
  });

  it('bad credentials are a boot failure with the reason (exit 3), not a service answering 40500', async () => {
    const svc = await startService({
      env: { ...mysqlEnv({ ...target, password: 'definitely-wrong-pw' }), SERVICE_WORKERS: '1' },
    });
    const { code } = await svc.exited;
    expect(code).to.equal(3);
    expect(svc.output).to.match(/Access denied/);
    expect(svc.output).not.to.contain('definitely-wrong-pw');
  });
});
