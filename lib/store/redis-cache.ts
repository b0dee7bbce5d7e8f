// The Redis read-through cache of bot configs (spec 6.3, 6.4): key
// `spark_bot:bot_config:{bot_id}`, value the config's JSON, expiry REDIS_EXPIRE seconds, slid on
// the hits of a key that has an expiry (reset once it has lost a second; see SLIDING_GET). One client per worker (a Cluster client when
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
//
// Near cache (REDIS_CLIENT_CACHE > 0, standalone only; issue 14): Redis server-assisted
// client-side caching. The worker's connection turns CLIENT TRACKING on (REDIRECT to a second,
// subscriber connection on __redis__:invalidate, as ioredis speaks RESP2; NOLOOP: own writes are
// invalidated locally before they are sent), so Redis remembers the keys it read and pushes an
// invalidation when any client changes, deletes or expires one of them (another worker, another
// instance, the original service, redis-cli, FLUSHDB). Values read are then kept in the worker
// (near-cache.ts: bounded, LRU) and answered without a round trip until invalidated. Whenever
// either connection closes, the near cache is flushed and disabled (reads go to Redis) until
// both are back and tracking is on again. A near-cache hit does not touch Redis: the sliding
// expiry is kept by a background slide (the same script) of every key hit since the last
// second, once a second, off the request path, so a read key expires REDIS_EXPIRE seconds (plus
// at most about one) after its last read, as before. Redis Cluster keeps one round trip per read
// (tracking would need a redirect connection per node).
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../telemetry/logger.js';
import { RateLimiter } from '../telemetry/rate-limit.js';
import { NearCache } from './near-cache.js';

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
  /** Entries of the near cache per worker (standalone only); 0 = none, every read asks Redis. */
  clientCache?: number;
  logger: Logger;
}

/** Where Redis pushes the invalidations of tracked keys (RESP2, REDIRECT mode). */
export const INVALIDATE_CHANNEL = '__redis__:invalidate';
/** Connection names (CLIENT LIST) of the near cache's two connections. */
export const TRACKING_CONNECTION = 'astron-agent:cache';
export const INVALIDATION_CONNECTION = 'astron-agent:invalidations';
const SLIDE_EVERY_MS = 1000;

/** Not JSON of a config: a reader that does not know it (the original) sees an unreadable value. */
export const TOMBSTONE = '\u0000astron-agent:deleted';
const DEFAULT_TOMBSTONE_MS = 10_000;

const KEY_PREFIX = 'spark_bot:bot_config:';
export const cacheKey = (botId: string) => `${KEY_PREFIX}${botId}`;

// GET, and when the key has an expiry, reset it to REDIS_EXPIRE: one round trip, atomic. Keys
// without an expiry (TTL -1) are left alone, as the original does. A tombstone is a miss.
// The reset is skipped while the key has more than REDIS_EXPIRE less a second (the slack, ARGV[3]
// is the threshold in ms) to live: every EXPIRE is a write that invalidates the key in every
// other worker's near cache (and is replicated), and resetting on every read made the workers
// evict each other's entries on each read. So a read key lives REDIS_EXPIRE seconds after its
// last read, give or take the slack.
// The second GET after an EXPIRE is for CLIENT TRACKING: the EXPIRE invalidates the key, which
// also ends this connection's tracking of it (NOLOOP only spares it the message), and the GET
// after it tracks the key again.
const SLIDING_GET = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[2] then return false end
if v then
  local t = redis.call('PTTL', KEYS[1])
  if t > 0 and t < tonumber(ARGV[3]) then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    v = redis.call('GET', KEYS[1])
  end
end
return v`;

/** The sliding expiry's slack (ms): a second, or a tenth of a shorter REDIS_EXPIRE. */
const slackMs = (expire: number) => Math.min(1000, expire * 100);

type Client = (Redis | Cluster) & {
  slidingGet(
    key: string,
    expire: number,
    tombstone: string,
    thresholdMs: number,
  ): Promise<string | null>;
};

function parseHostPort(entry: string): { host: string; port: number } {
  const i = entry.lastIndexOf(':');
  return { host: entry.slice(0, i), port: Number(entry.slice(i + 1)) };
}

const AUTH_ERROR = /WRONGPASS|NOAUTH|invalid password|invalid username-password/i;

export class RedisCache {
  /** Present when the near cache is configured (standalone mode, REDIS_CLIENT_CACHE > 0). */
  private readonly near?: NearCache;
  private sub?: Redis;
  private subId?: string;
  /** Bumped whenever the subscriber connection closes. */
  private subLink = 0;
  /** Bumped whenever a connection closes: tracking switched on before then is stale. */
  private link = 0;
  private slideTimer?: NodeJS.Timeout;
  private readonly trackWarnings = new RateLimiter(10_000);
  /** The expiry is reset when less than this (ms) is left: REDIS_EXPIRE less the slack. */
  private readonly slideBelowMs: number;

  private constructor(
    private readonly client: Client,
    readonly mode: 'standalone' | 'cluster',
    private readonly expire: number,
    private readonly tombstoneMs: number,
    clientCache: number,
    private readonly logger: Logger,
  ) {
    this.slideBelowMs = expire * 1000 - slackMs(expire);
    // A near-cache entry is served for at most as long as the key is sure to live in Redis
    // after the read that confirmed it (its last slide may be a slack older, one more for the
    // round trip); Redis's own expiry also pushes an invalidation, this bound does not wait for it.
    if (mode === 'standalone' && clientCache > 0)
      this.near = new NearCache(clientCache, Math.max(0, expire * 1000 - 2 * slackMs(expire)));
  }

  /** A read-through fill is attempted only this long (ms) after the miss that led to it. */
  get fillWindowMs(): number {
    return this.tombstoneMs / 2;
  }

  /** Whether reads may be answered by the near cache now (tracking on); for tests and logs. */
  get nearCacheActive(): boolean {
    return this.near?.enabled ?? false;
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
    const nearCache = mode === 'standalone' && (opts.clientCache ?? 0) > 0;
    const retry = (times: number) => Math.min(100 * times, 2000);
    const scripts = { slidingGet: { lua: SLIDING_GET, numberOfKeys: 1 } };
    const standalone = {
      ...parseHostPort(opts.addr),
      password,
      enableOfflineQueue: false,
      commandTimeout: opts.timeoutMs,
      connectTimeout: opts.timeoutMs,
      maxRetriesPerRequest: 1,
      retryStrategy: retry,
    };
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
            ...standalone,
            scripts,
            ...(nearCache ? { connectionName: TRACKING_CONNECTION } : {}),
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

    const cache = new RedisCache(
      client,
      mode,
      opts.expire,
      opts.tombstoneMs ?? DEFAULT_TOMBSTONE_MS,
      opts.clientCache ?? 0,
      opts.logger,
    );
    // Listeners first: the first 'ready' switches tracking on.
    if (nearCache) {
      const sub = new Redis({
        ...standalone,
        connectionName: INVALIDATION_CONNECTION,
        autoResubscribe: false,
      });
      sub.on('error', () => {}); // the same failures as the client's, logged there
      cache.wireTracking(client as Redis, sub);
    }

    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), opts.timeoutMs + 1000);
      client.once('ready', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!ready && lastError && AUTH_ERROR.test(lastError.message)) {
      await cache.close();
      throw new Error(`Redis (${mode}) rejected the password: ${lastError.message}`);
    }
    if (!ready) {
      opts.logger.warn('redis not reachable at start; reads use the database until it is', {
        mode,
        error: lastError?.message,
      });
    }
    return cache;
  }

  /** The near cache's connections: tracking on when both are ready, flushed when one closes. */
  private wireTracking(client: Redis, sub: Redis): void {
    const near = this.near!;
    this.sub = sub;
    const lost = () => {
      this.link++;
      near.setEnabled(false);
    };
    client.on('close', lost);
    sub.on('close', () => {
      this.subId = undefined;
      this.subLink++;
      lost();
    });
    sub.on('messageBuffer', (_channel: Buffer, message: unknown) => {
      // An array of key names, or null when the database was flushed (FLUSHDB, FLUSHALL).
      if (!Array.isArray(message)) {
        near.flush();
        return;
      }
      for (const k of message as unknown[]) {
        const name = String(k);
        if (name.startsWith(KEY_PREFIX)) near.invalidate(name.slice(KEY_PREFIX.length));
      }
    });
    sub.on('ready', () => {
      const subLink = this.subLink;
      void (async () => {
        try {
          const id = String(await sub.client('ID'));
          await sub.subscribe(INVALIDATE_CHANNEL);
          if (subLink !== this.subLink) return;
          this.subId = id;
          await this.track(client);
        } catch (err) {
          this.trackingFailed(err);
        }
      })();
    });
    client.on('ready', () => {
      this.track(client).catch((err: unknown) => this.trackingFailed(err));
    });
    this.slideTimer = setInterval(() => this.slide(), SLIDE_EVERY_MS);
    this.slideTimer.unref();
  }

  /** Switches tracking on (redirected to the subscriber) once both connections are ready. */
  private async track(client: Redis): Promise<void> {
    const id = this.subId;
    if (id === undefined || client.status !== 'ready') return;
    const link = this.link;
    await client.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', id, 'NOLOOP');
    // A connection closed meanwhile (or the subscriber changed): the next 'ready' tries again.
    if (link === this.link && id === this.subId) this.near!.setEnabled(true);
  }

  private trackingFailed(err: unknown): void {
    if (!this.trackWarnings.take().ok) return;
    this.logger.warn('redis client-side caching unavailable; every read asks Redis', {
      error: (err as Error)?.message ?? String(err),
    });
  }

  /** Slides the expiry of the keys answered by the near cache since the last slide. */
  private slide(): void {
    const near = this.near!;
    if (!near.enabled) return;
    for (const botId of near.takeSlides()) {
      const ticket = near.begin(botId);
      this.client.slidingGet(cacheKey(botId), this.expire, TOMBSTONE, this.slideBelowMs).then(
        (v) => near.complete(botId, ticket, v),
        () => near.invalidate(botId),
      );
    }
  }

  /** The near cache's value of the key (no round trip), or undefined. */
  peek(botId: string): string | undefined {
    return this.near?.get(botId);
  }

  /** The cached value (its expiry slid), or null. */
  get(botId: string): Promise<string | null> {
    const near = this.near;
    if (near?.enabled) {
      const hit = near.get(botId);
      if (hit !== undefined) return Promise.resolve(hit);
      const ticket = near.begin(botId);
      return this.client
        .slidingGet(cacheKey(botId), this.expire, TOMBSTONE, this.slideBelowMs)
        .then(
          (v) => {
            near.complete(botId, ticket, v);
            return v;
          },
          (err: unknown) => {
            near.invalidate(botId);
            throw err;
          },
        );
    }
    return this.client.slidingGet(cacheKey(botId), this.expire, TOMBSTONE, this.slideBelowMs);
  }

  /**
   * Read-through population: only if absent, so it never overwrites a writer's newer value nor
   * a tombstone.
   */
  async populate(botId: string, value: string): Promise<void> {
    this.near?.invalidate(botId);
    await this.client.set(cacheKey(botId), value, 'EX', this.expire, 'NX');
  }

  async put(botId: string, value: string): Promise<void> {
    this.near?.invalidate(botId);
    const r = await this.client.set(cacheKey(botId), value, 'EX', this.expire);
    if (r !== 'OK') throw new Error(`redis SET answered ${String(r)}`);
  }

  /** Replaces whatever is cached with a tombstone (see the top of this file). */
  async tombstone(botId: string): Promise<void> {
    this.near?.invalidate(botId);
    const r = await this.client.set(cacheKey(botId), TOMBSTONE, 'PX', this.tombstoneMs);
    if (r !== 'OK') throw new Error(`redis SET answered ${String(r)}`);
  }

  /** PING (in a cluster: the node the client asks); throws when Redis does not answer. */
  async ping(): Promise<void> {
    const r = await this.client.ping();
    if (r !== 'PONG') throw new Error(`redis PING answered ${String(r)}`);
  }

  async close(): Promise<void> {
    clearInterval(this.slideTimer);
    this.near?.setEnabled(false);
    const quit = async (c: Redis | Cluster) => {
      try {
        await Promise.race([c.quit(), new Promise((r) => setTimeout(r, 1000))]);
      } catch {
        /* not connected */
      }
      c.disconnect();
    };
    await Promise.all([quit(this.client), ...(this.sub ? [quit(this.sub)] : [])]);
  }
}
