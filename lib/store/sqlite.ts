// Embedded SQLite BotStore (the default when MYSQL_HOST is empty). One connection per worker,
// WAL journal: readers never block the writer, and several workers (processes) can write the
// same file; SQLite's file locks serialise the writes and a busy timeout makes a writer wait
// for another instead of failing. Every write is one autocommit statement, so the lock is held
// for microseconds, and the busy wait (which blocks the worker's loop) stays short.
//
// The table has the columns of the MySQL one (spec 6.2); JSON columns hold plain JSON text (no
// Python instance shares this file), and reads accept the double-encoded form too.
//
// A read (a chat's bot config, GET bot-config's text) answers a config read before from the
// worker's memory while no other connection has committed since: `PRAGMA data_version` (a third of the SELECT's cost) changes
// on this connection whenever another one (another worker, a CLI) commits to the file, and then
// everything remembered is dropped; this connection's own writes drop their bot's entry.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { formatNow } from '../schema/datetime.js';
import type { Logger } from '../telemetry/logger.js';
import {
  encodeColumns,
  fromRow,
  JSON_COLUMNS,
  rowValues,
  StoredValueMemo,
  type MemoEntry,
  type BotConfig,
  type BotConfigRow,
} from './bot-config.js';
import { Snowflake } from './snowflake.js';
import type { BotStore } from './types.js';

export interface SqliteOptions {
  /** File path (relative paths resolve against the working directory); `:memory:` for tests. */
  path: string;
  logger: Logger;
  /** How long a writer waits for another worker's write lock (ms). */
  busyTimeoutMs?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS bot_config (
  id INTEGER PRIMARY KEY,
  app_id TEXT NOT NULL,
  bot_id TEXT NOT NULL,
  knowledge_config TEXT NOT NULL,
  model_config TEXT NOT NULL,
  regular_config TEXT NOT NULL,
  tool_ids TEXT NOT NULL,
  mcp_server_ids TEXT NOT NULL,
  mcp_server_urls TEXT NOT NULL,
  flow_ids TEXT NOT NULL,
  create_at TEXT NOT NULL,
  update_at TEXT NOT NULL,
  is_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS uniq_bot_id ON bot_config (bot_id);
CREATE INDEX IF NOT EXISTS union_app_bot ON bot_config (app_id, bot_id);
`;

/** Runs `fn`, again after a short pause while it fails with SQLITE_BUSY, for up to `budgetMs`. */
async function retryWhileBusy(budgetMs: number, fn: () => void): Promise<void> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    try {
      fn();
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (!code?.startsWith('SQLITE_BUSY') || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
    }
  }
}

const COLS = ['app_id', 'bot_id', ...JSON_COLUMNS].join(', ');
/** Most configs remembered (all are dropped at once when full; they are cheap to reread). */
const KNOWN_MAX = 1024;

export class SqliteBotStore implements BotStore {
  readonly kind = 'sqlite';
  private readonly ids = new Snowflake();
  private readonly memo = new StoredValueMemo();
  private readonly stmts: {
    get: BetterSqlite3.Statement<[string, string], BotConfigRow>;
    insert: BetterSqlite3.Statement<Record<string, unknown>>;
    update: BetterSqlite3.Statement<Record<string, unknown>>;
    delete: BetterSqlite3.Statement<[string, string]>;
    dataVersion: BetterSqlite3.Statement<[], number>;
  };
  /** Configs by bot_id, valid while `PRAGMA data_version` still answers `seenVersion`. */
  private readonly known = new Map<string, MemoEntry>();
  private seenVersion = -1;

  private constructor(private readonly db: BetterSqlite3.Database) {
    const sets = JSON_COLUMNS.map((c) => `${c} = @${c}`).join(', ');
    this.stmts = {
      get: db.prepare(`SELECT ${COLS} FROM bot_config WHERE app_id = ? AND bot_id = ? LIMIT 1`),
      insert: db.prepare(
        `INSERT INTO bot_config (id, ${COLS}, create_at, update_at, is_deleted)
         VALUES (@id, @app_id, @bot_id, ${JSON_COLUMNS.map((c) => `@${c}`).join(', ')}, @now, @now, 0)`,
      ),
      update: db.prepare(
        `UPDATE bot_config SET ${sets}, update_at = @now WHERE app_id = @app_id AND bot_id = @bot_id`,
      ),
      delete: db.prepare('DELETE FROM bot_config WHERE app_id = ? AND bot_id = ?'),
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
    };
  }

  static async open(opts: SqliteOptions): Promise<SqliteBotStore> {
    const { default: Database } = await import('better-sqlite3');
    const file = opts.path === ':memory:' ? opts.path : resolve(opts.path);
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const busyMs = opts.busyTimeoutMs ?? 5000;
    const db = new Database(file, { timeout: busyMs });
    try {
      // Workers starting together on a fresh file race for its set-up. Switching a new file to
      // WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once, without its busy
      // wait, where waiting could deadlock: so the set-up is retried here, for as long as the
      // busy timeout, with short randomised pauses.
      await retryWhileBusy(busyMs, () => {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
        // IF NOT EXISTS in one immediate transaction: workers take turns on the write lock, and
        // the ones after the first find the table there.
        db.transaction(() => db.exec(SCHEMA)).immediate();
      });
      const store = new SqliteBotStore(db);
      opts.logger.debug('bot config store: sqlite', { path: file });
      return store;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  async get(appId: string, botId: string): Promise<BotConfig | null> {
    return this.read(appId, botId)?.cfg ?? null;
  }

  async getText(appId: string, botId: string): Promise<string | null> {
    return this.peekText(appId, botId);
  }

  /** getText without the promise: better-sqlite3 answers synchronously. */
  peekText(appId: string, botId: string): string | null {
    const known = this.read(appId, botId);
    if (!known) return null;
    known.text ??= JSON.stringify(known.cfg);
    return known.text;
  }

  /** The bot's config from memory while no other connection has committed, else from the file. */
  private read(appId: string, botId: string): MemoEntry | undefined {
    const version = this.stmts.dataVersion.get()!;
    if (version !== this.seenVersion) {
      // Another connection committed (or this is the first read): nothing remembered holds.
      this.known.clear();
      this.seenVersion = version;
    }
    const known = this.known.get(botId);
    if (known !== undefined && known.cfg.app_id === appId) return known;
    const row = this.stmts.get.get(appId, botId);
    if (!row) return undefined;
    const hit = this.memo.entry(botId, rowValues(row), () => fromRow(row));
    if (this.known.size >= KNOWN_MAX && !this.known.has(botId)) this.known.clear();
    this.known.set(botId, hit);
    return hit;
  }

  async create(cfg: BotConfig): Promise<boolean> {
    this.known.delete(cfg.bot_id);
    try {
      this.stmts.insert.run({
        id: this.ids.next(),
        app_id: cfg.app_id,
        bot_id: cfg.bot_id,
        ...encodeColumns(cfg, 'plain'),
        now: formatNow(),
      });
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_CONSTRAINT_UNIQUE' && /bot_id/.test((err as Error).message))
        return false;
      throw err;
    }
  }

  async update(cfg: BotConfig): Promise<boolean> {
    this.known.delete(cfg.bot_id);
    const r = this.stmts.update.run({
      app_id: cfg.app_id,
      bot_id: cfg.bot_id,
      ...encodeColumns(cfg, 'plain'),
      now: formatNow(),
    });
    return r.changes > 0;
  }

  async delete(appId: string, botId: string): Promise<boolean> {
    this.known.delete(botId);
    return this.stmts.delete.run(appId, botId).changes > 0;
  }

  async health(): Promise<{ store?: string }> {
    try {
      this.db.prepare('SELECT 1').get();
      return {};
    } catch (err) {
      return { store: (err as Error).message };
    }
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
