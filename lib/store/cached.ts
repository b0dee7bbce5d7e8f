// A BotStore with the Redis cache in front (spec 6.3), and the rule that keeps the two
// consistent: after a successful write no reader sees the value it replaced or deleted.
//
// Reads: cache first (a hit for another app_id is "not found", as in the original: the key has
// no app_id, defect D8 kept), else the database, then populate the cache (SET NX, so a slow
// reader never overwrites a writer's newer value or tombstone; and only within the cache's fill
// window after the miss, so a reader slower than a tombstone's life does not fill either).
// Redis down: the database answers, a warning is logged (at most every 10 s).
//
// Writes, per operation:
//   update: existence check (as a read) -> tombstone the key (must succeed, else 40041 and
//           nothing is written) -> UPDATE in the database -> SET the new value (best effort: if
//           that fails the tombstone expires and the next read repopulates from the database).
//   delete: existence check -> tombstone (must succeed, else 40051 and nothing is deleted) ->
//           DELETE -> tombstone again (best effort: its life then starts after the commit, so it
//           covers every reader that read the row before the commit and fills within its window).
//   create: a cached config for the bot_id counts as existing (as in the original; a tombstone
//           does not); the cache is not written. Redis down: the database's unique index decides.
// Why a tombstone and not DEL: a reader that missed and read the row before a DELETE commits
// would otherwise fill the cache after the eviction, serving the deleted config (its TTL slid on
// every hit) and making a re-create answer 40053 (issue 13).
import { AgentError, CODES } from '../agent/errors.js';
import type { Logger } from '../telemetry/logger.js';
import { RateLimiter } from '../telemetry/rate-limit.js';
import { fromCacheValue, StoredValueMemo, toCacheValue, type BotConfig } from './bot-config.js';
import type { RedisCache } from './redis-cache.js';
import { probe, type BotStore } from './types.js';

/** What the cached store needs from a cache (RedisCache, or a fake in unit tests). */
export type BotCache = Pick<
  RedisCache,
  'get' | 'populate' | 'put' | 'tombstone' | 'fillWindowMs' | 'ping' | 'close' | 'mode'
> &
  Partial<Pick<RedisCache, 'peek'>>;

export class CachedBotStore implements BotStore {
  readonly kind: string;
  /** One "Redis unavailable" warning every 10 s at most. */
  private readonly warnings = new RateLimiter(10_000);
  /** Cached values read recently (a hit of the same value parses nothing). */
  private readonly memo = new StoredValueMemo();

  constructor(
    private readonly db: BotStore,
    private readonly cache: BotCache,
    private readonly logger: Logger,
  ) {
    this.kind = `${db.kind}+${cache.mode === 'cluster' ? 'redis-cluster' : 'redis'}`;
  }

  private warn(op: string, err: unknown): void {
    const { ok, suppressed } = this.warnings.take();
    if (!ok) return;
    this.logger.warn(`redis unavailable during ${op}; answered from the database`, {
      error: (err as Error)?.message ?? String(err),
      suppressed,
    });
  }

  /** The cached value; `undefined` when Redis could not be asked. */
  private async cached(botId: string, op: string): Promise<string | null | undefined> {
    try {
      return await this.cache.get(botId);
    } catch (err) {
      this.warn(op, err);
      return undefined;
    }
  }

  async get(appId: string, botId: string): Promise<BotConfig | null> {
    const missedAt = performance.now();
    const raw = await this.cached(botId, 'read');
    if (raw) {
      const cfg = this.memo.config(botId, [raw], () => fromCacheValue(raw));
      return cfg.app_id === appId ? cfg : null;
    }
    const cfg = await this.db.get(appId, botId);
    if (cfg && raw !== undefined && performance.now() - missedAt < this.cache.fillWindowMs) {
      try {
        await this.cache.populate(botId, toCacheValue(cfg));
      } catch (err) {
        this.warn('cache population', err);
      }
    }
    return cfg;
  }

  /** A near-cache hit (redis-cache.ts), answered without a round trip; else undefined. */
  peekText(appId: string, botId: string): string | null | undefined {
    const near = this.cache.peek?.(botId);
    if (near === undefined) return undefined;
    const hit = this.memo.text(botId, [near], () => fromCacheValue(near));
    return hit.appId === appId ? hit.text : null;
  }

  async getText(appId: string, botId: string): Promise<string | null> {
    const near = this.peekText(appId, botId);
    if (near !== undefined) return near;
    const missedAt = performance.now();
    const raw = await this.cached(botId, 'read');
    if (raw) {
      const hit = this.memo.text(botId, [raw], () => fromCacheValue(raw));
      return hit.appId === appId ? hit.text : null;
    }
    const cfg = await this.db.get(appId, botId);
    if (!cfg) return null;
    const text = toCacheValue(cfg);
    if (raw !== undefined && performance.now() - missedAt < this.cache.fillWindowMs) {
      try {
        await this.cache.populate(botId, text);
      } catch (err) {
        this.warn('cache population', err);
      }
    }
    return text;
  }

  async create(cfg: BotConfig): Promise<boolean> {
    const raw = await this.cached(cfg.bot_id, 'create');
    if (raw) {
      fromCacheValue(raw); // an unreadable cached value is 40003, as in the original
      return false;
    }
    return await this.db.create(cfg);
  }

  async update(cfg: BotConfig): Promise<boolean> {
    if (!(await this.get(cfg.app_id, cfg.bot_id))) return false;
    try {
      await this.cache.tombstone(cfg.bot_id);
    } catch (err) {
      throw new AgentError(CODES.REDIS_PING, undefined, {
        cause: err,
        origin: { message: (err as Error).message },
      });
    }
    const ok = await this.db.update(cfg);
    if (ok) {
      try {
        await this.cache.put(cfg.bot_id, toCacheValue(cfg));
      } catch (err) {
        this.warn('cache rewrite (the tombstone stays until it expires)', err);
      }
    }
    return ok;
  }

  async delete(appId: string, botId: string): Promise<boolean> {
    if (!(await this.get(appId, botId))) return false;
    try {
      await this.cache.tombstone(botId);
    } catch (err) {
      throw new AgentError(CODES.BOT_CONFIG_DELETE, undefined, {
        cause: err,
        origin: { message: (err as Error).message },
      });
    }
    const ok = await this.db.delete(appId, botId);
    try {
      await this.cache.tombstone(botId);
    } catch (err) {
      this.warn('second tombstone', err);
    }
    return ok;
  }

  async health(timeoutMs: number): Promise<{ store?: string; cache?: string }> {
    const [db, cache] = await Promise.all([
      this.db.health(timeoutMs),
      probe(() => this.cache.ping(), timeoutMs),
    ]);
    return cache ? { ...db, cache } : db;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.cache.close(), this.db.close()]);
  }
}
