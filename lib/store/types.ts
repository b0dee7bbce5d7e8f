// The one storage interface behind the bot-config endpoints (and, later, the chat endpoints).
// Backends: MySQL (mysql.ts), embedded SQLite (sqlite.ts, the default), memory (tests only);
// CachedBotStore (cached.ts) puts the Redis cache in front of any of them.
import type { BotConfig } from './bot-config.js';

export interface BotStore {
  /** e.g. `sqlite`, `mysql`, `mysql+redis`, `mysql+redis-cluster`: for logs and the bench. */
  readonly kind: string;
  /** The config of `bot_id` owned by `app_id`, or null (absent, or owned by another app). */
  get(appId: string, botId: string): Promise<BotConfig | null>;
  /**
   * Inserts a new config. false when a config with this bot_id already exists; the database
   * decides (a unique index, or a database lock), so of concurrent creates exactly one wins.
   */
  create(cfg: BotConfig): Promise<boolean>;
  /** Replaces the config of (app_id, bot_id). false when there is none. */
  update(cfg: BotConfig): Promise<boolean>;
  /** Deletes the config of (app_id, bot_id). false when there is none. */
  delete(appId: string, botId: string): Promise<boolean>;
  close(): Promise<void>;
}
