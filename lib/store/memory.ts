// In-memory BotStore for unit tests (and apps built by tests): same semantics as the SQL
// backends, extras dropped as a SQL row drops them. Never used by the service.
import { withoutExtras, type BotConfig } from './bot-config.js';
import type { BotStore } from './types.js';

export class MemoryBotStore implements BotStore {
  readonly kind = 'memory';
  /** Keyed by bot_id: bot_id is unique, as in the SQL tables. */
  private readonly rows = new Map<string, BotConfig>();

  async get(appId: string, botId: string): Promise<BotConfig | null> {
    const row = this.rows.get(botId);
    return row && row.app_id === appId ? structuredClone(row) : null;
  }

  async create(cfg: BotConfig): Promise<boolean> {
    if (this.rows.has(cfg.bot_id)) return false;
    this.rows.set(cfg.bot_id, structuredClone(withoutExtras(cfg)));
    return true;
  }

  async update(cfg: BotConfig): Promise<boolean> {
    const row = this.rows.get(cfg.bot_id);
    if (!row || row.app_id !== cfg.app_id) return false;
    this.rows.set(cfg.bot_id, structuredClone(withoutExtras(cfg)));
    return true;
  }

  async delete(appId: string, botId: string): Promise<boolean> {
    const row = this.rows.get(botId);
    if (!row || row.app_id !== appId) return false;
    this.rows.delete(botId);
    return true;
  }

  async health(): Promise<{ store?: string }> {
    return {};
  }

  async close(): Promise<void> {}
}
