// The Redis read-through cache of bot configs (spec 6.3, 6.4): key
// `spark_bot:bot_config:{bot_id}`, value the config's JSON, expiry REDIS_EXPIRE seconds, slid on
// every hit of a key that has an expiry. One client per worker (a Cluster client when
// REDIS_CLUSTER_ADDR is set, which wins over REDIS_ADDR), created at start and reused.
//
// Deletes and updates leave a short tombstone in the key itself (not a second key: a second key
// would sit in another Cluster slot and a script could not check both): read-through fills are
// SET NX, so a reader that read the row before the write committed cannot fill the cache while
// the tombstone lives, and a reader slower than half its life does not try (fillWindowMs). The
// tombstone is never served, never slid, and counts as a miss (also for a re-create).
//
// Commands fail fast instead of queueing while Redis is unreachable (no offline queue, a
// command timeout): the caller decides what a failure means (reads fall back to the database,
// writes are refused). ioredis reconnects in the background.
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../telemetry/logger.js';

export interface RedisCacheOptions {
  /** `host:port,host:port` (Redis Cluster); wins over `addr`. */
  clusterAddr: string;
  /** `host:port` (standalone). */
  addr: string;
  password: string;
  /** Expiry in seconds. */
  expire: number;
  /** Connect and command timeout (ms). */
  timeoutMs: number;
  /** Life of a write's tombstone (ms); read-through fills later than half of it are skipped. */
  tombstoneMs?: number;
  logger: Logger;
}

/** Not JSON of a config: a reader that does not know it (the original) sees an unreadable value. */
export const TOMBSTONE = '\u0000astron-agent:deleted';
const DEFAULT_TOMBSTONE_MS = 10_000;

export const cacheKey = (botId: string) => `spark_bot:bot_config:${botId}`;

// GET, and when the key has an expiry, reset it to REDIS_EXPIRE: one round trip, atomic. Keys
// without an expiry (TTL -1) are left alone, as the original does. A tombstone is a miss.
const SLIDING_GET = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[2] then return false end
if v and redis.call('TTL', KEYS[1]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return v`;

type Client = (Redis | Cluster) & {
  slidingGet(key: string, expire: number, tombstone: string): Promise<string | null>;
};

function parseHostPort(entry: string): { host: string; port: number } {
  const i = entry.lastIndexOf(':');
  return { host: entry.slice(0, i), port: Number(entry.slice(i + 1)) };
}

const AUTH_ERROR = /WRONGPASS|NOAUTH|invalid password|invalid username-password/i;

export class RedisCache {
  private constructor(
    private readonly client: Client,
    readonly mode: 'standalone' | 'cluster',
    private readonly expire: number,
    private readonly tombstoneMs: number,
  ) {}

  /** A read-through fill is attempted only this long (ms) after the miss that led to it. */
  get fillWindowMs(): number {
    return this.tombstoneMs / 2;
  }

  /**
   * Connects and waits (up to the timeout) until the client is ready. Unreachable Redis is not
   * fatal (reads fall back to the database meanwhile); a rejected password is.
   */
  static async open(opts: RedisCacheOptions): Promise<RedisCache> {
    // module.exports as `default` (see MysqlBotStore.open).
    const {
      default: { Redis, Cluster },
    } = await import('ioredis');
    const password = opts.password || undefined;
    const mode = opts.clusterAddr ? 'cluster' : 'standalone';
    const retry = (times: number) => Math.min(100 * times, 2000);
    const scripts = { slidingGet: { lua: SLIDING_GET, numberOfKeys: 1 } };
    const client = (
      mode === 'cluster'
        ? new Cluster(
            opts.clusterAddr
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
              .map(parseHostPort),
            {
              enableOfflineQueue: false,
              clusterRetryStrategy: retry,
              slotsRefreshTimeout: opts.timeoutMs,
              scripts,
              redisOptions: {
                password,
                commandTimeout: opts.timeoutMs,
                connectTimeout: opts.timeoutMs,
                maxRetriesPerRequest: 1,
              },
            },
          )
        : new Redis({
            ...parseHostPort(opts.addr),
            password,
            enableOfflineQueue: false,
            commandTimeout: opts.timeoutMs,
            connectTimeout: opts.timeoutMs,
            maxRetriesPerRequest: 1,
            retryStrategy: retry,
            scripts,
          })
    ) as Client;

    let lastError: Error | undefined;
    let lastLogged = 0;
    client.on('error', (err: Error) => {
      lastError = err;
      // ioredis repeats its error on every reconnect attempt: one line every 10 s is enough.
      const now = Date.now();
      if (now - lastLogged > 10_000) {
        lastLogged = now;
        opts.logger.warn('redis connection error', { mode, error: err.message });
      }
    });

    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), opts.timeoutMs + 1000);
      client.once('ready', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!ready && lastError && AUTH_ERROR.test(lastError.message)) {
      client.disconnect();
      throw new Error(`Redis (${mode}) rejected the password: ${lastError.message}`);
    }
    if (!ready) {
      opts.logger.warn('redis not reachable at start; reads use the database until it is', {
        mode,
        error: lastError?.message,
      });
    }
    return new RedisCache(client, mode, opts.expire, opts.tombstoneMs ?? DEFAULT_TOMBSTONE_MS);
  }

  /** The cached value (its expiry slid), or null. */
  get(botId: string): Promise<string | null> {
    return this.client.slidingGet(cacheKey(botId), this.expire, TOMBSTONE);
  }

  /**
   * Read-through population: only if absent, so it never overwrites a writer's newer value nor
   * a tombstone.
   */
  async populate(botId: string, value: string): Promise<void> {
    await this.client.set(cacheKey(botId), value, 'EX', this.expire, 'NX');
  }

  async put(botId: string, value: string): Promise<void> {
    const r = await this.client.set(cacheKey(botId), value, 'EX', this.expire);
    if (r !== 'OK') throw new Error(`redis SET answered ${String(r)}`);
  }

  /** Replaces whatever is cached with a tombstone (see the top of this file). */
  async tombstone(botId: string): Promise<void> {
    const r = await this.client.set(cacheKey(botId), TOMBSTONE, 'PX', this.tombstoneMs);
    if (r !== 'OK') throw new Error(`redis SET answered ${String(r)}`);
  }

  /** PING (in a cluster: the node the client asks); throws when Redis does not answer. */
  async ping(): Promise<void> {
    const r = await this.client.ping();
    if (r !== 'PONG') throw new Error(`redis PING answered ${String(r)}`);
  }

  async close(): Promise<void> {
    try {
      await Promise.race([this.client.quit(), new Promise((r) => setTimeout(r, 1000))]);
    } catch {
      /* not connected */
    }
    this.client.disconnect();
  }
}
