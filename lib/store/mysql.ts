// MySQL/MariaDB BotStore: a mysql2 pool per worker, the `bot_config` table of spec 6.2.
//
// Table creation, once and not by every worker racing: each worker, at start, takes the MySQL
// named lock `GET_LOCK('astron-agent:ddl:<db>.<table>')` on one connection, looks the table up
// in information_schema, creates it only if it is missing, and releases the lock. Workers (and
// other hosts) starting together queue on the lock; the first creates the table and logs
// "created table", the others find it. This is done in the workers rather than in the primary
// so the primary never loads a database driver, and so several instances sharing one database
// are covered too. A missing database connection at start is not fatal (the service starts, the
// endpoints answer 40500, and the next request retries); bad credentials or an unknown database
// are (the worker fails to boot and the service exits 3 with the reason).
//
// Duplicates: the table we create has a UNIQUE index on bot_id (the original's ORM declares
// bot_id unique, and its Redis key is bot_id alone), so of concurrent creates exactly one
// INSERT wins and the others get ER_DUP_ENTRY -> 40053. A table created by the original's DDL
// has no such index (only `union_app_bot`); on such a table, creates take a per-bot named lock
// (GET_LOCK) around "check, then insert", which serialises the creates of this service.
//
// Encoding: JSON columns are written double-encoded, as the Python service writes them; reads
// accept that and plain JSON (see bot-config.ts).
import { createHash } from 'node:crypto';
import type {
  Pool,
  PoolConnection,
  PoolOptions,
  ResultSetHeader,
  RowDataPacket,
} from 'mysql2/promise';
import { formatNow } from '../schema/datetime.js';
import type { Logger } from '../telemetry/logger.js';
import {
  encodeColumns,
  fromRow,
  JSON_COLUMNS,
  rowValues,
  StoredValueMemo,
  type BotConfig,
  type BotConfigRow,
} from './bot-config.js';
import { Snowflake } from './snowflake.js';
import { probe, type BotStore } from './types.js';

export interface MysqlOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  poolSize: number;
  /** Connect and query timeout (ms). */
  timeoutMs: number;
  logger: Logger;
  /** Table name; `bot_config` except in tests. */
  table?: string;
}

/** Errors that say "the database is not reachable (now)": the service starts anyway. */
const TRANSIENT = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
]);

export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code !== undefined && TRANSIENT.has(code);
}

function ddl(table: string): string {
  const json = JSON_COLUMNS.map((c) => `  \`${c}\` json NOT NULL,`).join('\n');
  return `CREATE TABLE IF NOT EXISTS \`${table}\` (
  \`id\` bigint NOT NULL,
  \`app_id\` varchar(32) NOT NULL,
  \`bot_id\` varchar(40) NOT NULL,
${json}
  \`create_at\` datetime NOT NULL,
  \`update_at\` datetime NOT NULL,
  \`is_deleted\` tinyint NOT NULL DEFAULT 0,
  PRIMARY KEY (\`id\`),
  UNIQUE KEY \`uniq_bot_id\` (\`bot_id\`),
  KEY \`union_app_bot\` (\`app_id\`, \`bot_id\`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;
}

/** MySQL lock names are limited to 64 characters. */
const lockName = (kind: string, key: string) =>
  `astron-agent:${kind}:${createHash('sha1').update(key).digest('hex').slice(0, 32)}`;

type Row = BotConfigRow & RowDataPacket;

export class MysqlBotStore implements BotStore {
  readonly kind = 'mysql';
  private readonly ids = new Snowflake();
  private readonly memo = new StoredValueMemo();
  private readonly table: string;
  private schema: Promise<void> | null = null;
  private schemaReady = false;
  /** Whether the table has a UNIQUE index on bot_id alone (else creates take a named lock). */
  private uniqueBotId = false;
  private readonly selectSql: string;
  private readonly insertSql: string;
  private readonly updateSql: string;
  private readonly deleteSql: string;

  private constructor(
    private readonly pool: Pool,
    private readonly opts: MysqlOptions,
  ) {
    this.table = opts.table ?? 'bot_config';
    const t = `\`${this.table}\``;
    const cols = ['app_id', 'bot_id', ...JSON_COLUMNS].map((c) => `\`${c}\``).join(', ');
    this.selectSql = `SELECT ${cols} FROM ${t} WHERE app_id = ? AND bot_id = ? LIMIT 1`;
    this.insertSql = `INSERT INTO ${t} (id, ${cols}, create_at, update_at, is_deleted) VALUES (?, ?, ?, ${JSON_COLUMNS.map(() => '?').join(', ')}, ?, ?, 0)`;
    this.updateSql = `UPDATE ${t} SET ${JSON_COLUMNS.map((c) => `\`${c}\` = ?`).join(', ')}, update_at = ? WHERE app_id = ? AND bot_id = ?`;
    this.deleteSql = `DELETE FROM ${t} WHERE app_id = ? AND bot_id = ?`;
  }

  /** Creates the pool and the table; a database that is down now is retried on first use. */
  static async open(opts: MysqlOptions): Promise<MysqlBotStore> {
    // module.exports as `default`: natively and in the bundle, where a CommonJS module imported
    // by import() has no named exports (tools/bundle.mjs).
    const { default: mysql } = await import('mysql2/promise');
    const config: PoolOptions = {
      host: opts.host,
      port: opts.port,
      user: opts.user,
      password: opts.password,
      database: opts.database,
      charset: 'utf8mb4',
      connectionLimit: opts.poolSize,
      maxIdle: opts.poolSize,
      idleTimeout: 60_000,
      connectTimeout: opts.timeoutMs,
      enableKeepAlive: true,
      waitForConnections: true,
      queueLimit: 0,
      // JSON columns as text (MariaDB's JSON is text anyway): one decoder for both servers.
      jsonStrings: true,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    };
    const pool = mysql.createPool(config);
    // Strict mode on every connection: a value longer than its column fails (spec D9: a 33- to
    // 64-character app_id is a 40500) instead of being silently truncated on a lax server.
    pool.on('connection', (conn) => {
      (conn as unknown as { query(sql: string, cb: (err: Error | null) => void): void }).query(
        "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'STRICT_TRANS_TABLES')",
        (err) => {
          if (err) opts.logger.warn('could not set strict sql_mode', { error: err.message });
        },
      );
    });
    const store = new MysqlBotStore(pool, opts);
    try {
      await store.ensureSchema();
    } catch (err) {
      if (!isTransientDbError(err)) {
        await pool.end().catch(() => {});
        throw new Error(
          `MySQL ${opts.user}@${opts.host}:${opts.port}/${opts.database}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      opts.logger.error(
        'MySQL is not reachable; the bot-config endpoints answer 40500 until it is',
        {
          host: opts.host,
          port: opts.port,
          error: (err as Error).message,
        },
      );
    }
    return store;
  }

  /** Once per process (retried after a failure): create the table if missing, under a lock. */
  private ensureSchema(): Promise<void> {
    if (this.schemaReady) return Promise.resolve();
    this.schema ??= this.createSchema().then(
      () => {
        this.schemaReady = true;
      },
      (err: unknown) => {
        this.schema = null;
        throw err;
      },
    );
    return this.schema;
  }

  private async createSchema(): Promise<void> {
    const conn = await this.pool.getConnection();
    const lock = lockName('ddl', `${this.opts.database}.${this.table}`);
    try {
      const [[got]] = await conn.query<RowDataPacket[]>({
        sql: 'SELECT GET_LOCK(?, ?) AS got',
        values: [lock, Math.ceil(this.opts.timeoutMs / 1000) + 5],
      });
      if (Number(got?.got) !== 1) throw new Error('timed out waiting for the schema lock');
      try {
        const [found] = await conn.query<RowDataPacket[]>(
          'SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?',
          [this.table],
        );
        if (found.length === 0) {
          await conn.query(ddl(this.table));
          this.opts.logger.info(`created table ${this.table}`, { database: this.opts.database });
        } else {
          this.opts.logger.debug(`table ${this.table} present`, { database: this.opts.database });
        }
        const [idx] = await conn.query<RowDataPacket[]>(
          `SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) AS cols
             FROM information_schema.STATISTICS
            WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0
            GROUP BY INDEX_NAME`,
          [this.table],
        );
        this.uniqueBotId = idx.some((r) => r.cols === 'bot_id');
        if (!this.uniqueBotId) {
          this.opts.logger.warn(
            `table ${this.table} has no UNIQUE index on bot_id (created by the original's DDL?): creates are serialised with a database lock`,
          );
        }
      } finally {
        await conn.query('DO RELEASE_LOCK(?)', [lock]).catch(() => {});
      }
    } finally {
      conn.release();
    }
  }

  private async query<T extends RowDataPacket[] | ResultSetHeader>(
    sql: string,
    values: (string | number | null)[],
    conn: Pool | PoolConnection = this.pool,
  ): Promise<T> {
    if (!this.schemaReady) await this.ensureSchema();
    // Prepared statements (cached per connection by mysql2): parsed once by the server.
    const [result] = await conn.execute<T>({ sql, values, timeout: this.opts.timeoutMs });
    return result;
  }

  async get(appId: string, botId: string): Promise<BotConfig | null> {
    const row = await this.row(appId, botId);
    return row ? this.memo.config(botId, rowValues(row), () => fromRow(row)) : null;
  }

  async getText(appId: string, botId: string): Promise<string | null> {
    const row = await this.row(appId, botId);
    if (!row) return null;
    return this.memo.text(botId, rowValues(row), () => fromRow(row)).text;
  }

  private async row(appId: string, botId: string): Promise<Row | undefined> {
    let rows: Row[];
    try {
      rows = await this.query<Row[]>(this.selectSql, [appId, botId]);
    } catch (err) {
      // A pooled connection the server (or a network blip) closed while idle: one retry on a
      // fresh connection; reads are idempotent.
      if (!isTransientDbError(err)) throw err;
      rows = await this.query<Row[]>(this.selectSql, [appId, botId]);
    }
    return rows[0];
  }

  private insertValues(cfg: BotConfig): string[] {
    const cols = encodeColumns(cfg, 'python');
    const now = formatNow();
    return [
      this.ids.next().toString(),
      cfg.app_id,
      cfg.bot_id,
      ...JSON_COLUMNS.map((c) => cols[c]),
      now,
      now,
    ];
  }

  async create(cfg: BotConfig): Promise<boolean> {
    await this.ensureSchema();
    if (!this.uniqueBotId) return await this.createLocked(cfg);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.query<ResultSetHeader>(this.insertSql, this.insertValues(cfg));
        return true;
      } catch (err) {
        if ((err as { code?: string }).code !== 'ER_DUP_ENTRY') throw err;
        // A (vanishingly unlikely) id collision: draw another id once.
        if (/PRIMARY/.test((err as Error).message) && attempt === 0) continue;
        return false;
      }
    }
  }

  /** On a table without a unique bot_id: check and insert under a per-bot named lock. */
  private async createLocked(cfg: BotConfig): Promise<boolean> {
    const conn = await this.pool.getConnection();
    const lock = lockName('bot', cfg.bot_id);
    try {
      const [[got]] = await conn.query<RowDataPacket[]>({
        sql: 'SELECT GET_LOCK(?, ?) AS got',
        values: [lock, Math.ceil(this.opts.timeoutMs / 1000)],
        timeout: this.opts.timeoutMs + 1000,
      });
      if (Number(got?.got) !== 1)
        throw new Error(`timed out waiting for the lock of bot ${cfg.bot_id}`);
      try {
        const t = `\`${this.table}\``;
        const existing = await this.query<RowDataPacket[]>(
          `SELECT 1 FROM ${t} WHERE bot_id = ? LIMIT 1`,
          [cfg.bot_id],
          conn,
        );
        if (existing.length > 0) return false;
        await this.query<ResultSetHeader>(this.insertSql, this.insertValues(cfg), conn);
        return true;
      } finally {
        await conn.query('DO RELEASE_LOCK(?)', [lock]).catch(() => {});
      }
    } finally {
      conn.release();
    }
  }

  async update(cfg: BotConfig): Promise<boolean> {
    const cols = encodeColumns(cfg, 'python');
    const r = await this.query<ResultSetHeader>(this.updateSql, [
      ...JSON_COLUMNS.map((c) => cols[c]),
      formatNow(),
      cfg.app_id,
      cfg.bot_id,
    ]);
    // mysql2 connects with CLIENT_FOUND_ROWS: affectedRows counts matched rows, also when the
    // new values equal the old ones.
    return r.affectedRows > 0;
  }

  async delete(appId: string, botId: string): Promise<boolean> {
    const r = await this.query<ResultSetHeader>(this.deleteSql, [appId, botId]);
    return r.affectedRows > 0;
  }

  async health(timeoutMs: number): Promise<{ store?: string }> {
    const store = await probe(() => this.pool.query('SELECT 1'), timeoutMs);
    return store ? { store } : {};
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
