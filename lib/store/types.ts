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
   * The same read as `get`, as the JSON text of the config (what GET bot-config answers in
   * `data`); a backend may answer it from a memo of the stored value's text.
   */
  getText?(appId: string, botId: string): Promise<string | null>;
  /**
   * The text `getText` would answer, when the backend knows it without I/O (a memo, a near
   * cache, an embedded database): the text, or null (no such config). undefined: ask getText.
   * May throw what getText would (the caller then asks getText, which throws it again).
   */
  peekText?(appId: string, botId: string): string | null | undefined;
  /**
   * Inserts a new config. false when a config with this bot_id already exists; the database
   * decides (a unique index, or a database lock), so of concurrent creates exactly one wins.
   */
  create(cfg: BotConfig): Promise<boolean>;
  /** Replaces the config of (app_id, bot_id). false when there is none. */
  update(cfg: BotConfig): Promise<boolean>;
  /** Deletes the config of (app_id, bot_id). false when there is none. */
  delete(appId: string, botId: string): Promise<boolean>;
  /**
   * Whether the dependencies answer now, for /health/ready: a reason per one that does not
   * (`store`: the database; `cache`: Redis, when configured), none when all answer.
   */
  health(timeoutMs: number): Promise<{ store?: string; cache?: string }>;
  close(): Promise<void>;
}

/** Runs `probe` with a deadline; the failure's message, or undefined when it answered. */
export async function probe(
  fn: () => Promise<unknown>,
  timeoutMs: number,
): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return undefined;
  } catch (err) {
    return (err as Error)?.message ?? String(err);
  } finally {
    clearTimeout(timer);
  }
}
