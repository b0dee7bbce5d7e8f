// Builds a worker's BotStore from the settings, once: MySQL when MYSQL_HOST is set, else the
// embedded SQLite file; the Redis cache in front when REDIS_CLUSTER_ADDR or REDIS_ADDR is set.
// Drivers are imported only when configured, so a worker loads no driver it does not use.
import type { Settings } from '../config/settings.js';
import type { Logger } from '../telemetry/logger.js';
import type { BotStore } from './types.js';

export type { BotStore } from './types.js';

type StoreSettings = Pick<
  Settings,
  | 'MYSQL_HOST'
  | 'MYSQL_PORT'
  | 'MYSQL_USER'
  | 'MYSQL_PASSWORD'
  | 'MYSQL_DB'
  | 'MYSQL_POOL_SIZE'
  | 'MYSQL_TIMEOUT'
  | 'SQLITE_PATH'
  | 'REDIS_CLUSTER_ADDR'
  | 'REDIS_ADDR'
  | 'REDIS_PASSWORD'
  | 'REDIS_EXPIRE'
  | 'REDIS_TIMEOUT'
  | 'REDIS_CLIENT_CACHE'
>;

export async function openBotStore(settings: StoreSettings, logger: Logger): Promise<BotStore> {
  let db: BotStore;
  if (settings.MYSQL_HOST) {
    const { MysqlBotStore } = await import('./mysql.js');
    db = await MysqlBotStore.open({
      host: settings.MYSQL_HOST,
      port: settings.MYSQL_PORT,
      user: settings.MYSQL_USER,
      password: settings.MYSQL_PASSWORD,
      database: settings.MYSQL_DB,
      poolSize: settings.MYSQL_POOL_SIZE,
      timeoutMs: settings.MYSQL_TIMEOUT,
      logger,
    });
  } else {
    const { SqliteBotStore } = await import('./sqlite.js');
    db = await SqliteBotStore.open({ path: settings.SQLITE_PATH, logger });
  }
  if (!settings.REDIS_CLUSTER_ADDR && !settings.REDIS_ADDR) return db;
  try {
    const [{ RedisCache }, { CachedBotStore }] = await Promise.all([
      import('./redis-cache.js'),
      import('./cached.js'),
    ]);
    const cache = await RedisCache.open({
      clusterAddr: settings.REDIS_CLUSTER_ADDR,
      addr: settings.REDIS_ADDR,
      password: settings.REDIS_PASSWORD,
      expire: settings.REDIS_EXPIRE,
      timeoutMs: settings.REDIS_TIMEOUT,
      clientCache: settings.REDIS_CLIENT_CACHE,
      logger,
    });
    return new CachedBotStore(db, cache, logger);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}
