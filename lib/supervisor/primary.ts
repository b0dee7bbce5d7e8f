// `astron-agent start`: load and validate the configuration, then run the worker pool.
import { loadConfig, loadOrReport, type LoadOptions } from '../config/load.js';
import { createLogger } from '../telemetry/logger.js';
import { version } from '../version.js';
import { startControl, type Control } from './control.js';
import { createNotifier, monotonicUsec } from './notify.js';
import { removePidFile, writePidFile } from './pidfile.js';
import { Pool } from './pool.js';
import { metricsNotices, startClusterMetrics } from './scrape.js';
import { installSignals } from './signals.js';
import { watchForReload } from './watch.js';

export function runPrimary(opts: LoadOptions): void {
  const config = loadOrReport(opts);
  if (!config) {
    process.exitCode = 2;
    return;
  }
  const { settings } = config;
  const logger = createLogger({
    role: 'primary',
    level: settings.LOG_LEVEL,
    format: settings.LOG_FORMAT,
  });
  for (const n of config.notices) logger.warn(n);
  logger.info(`astron-agent ${version()} starting`, {
    config_file: config.file.path,
    settings,
  });
  if (!settings.MYSQL_HOST) {
    logger.info(
      `bot configs in the embedded SQLite file ${settings.SQLITE_PATH}: right for one instance; to run several instances behind a load balancer, set MYSQL_HOST (and REDIS_ADDR or REDIS_CLUSTER_ADDR) so that they share state`,
    );
  }

  const pool = new Pool({
    logger,
    config,
    reloadConfig: () => loadConfig(opts),
    exit: (code) => {
      const end = () => {
        try {
          if (pidFile) removePidFile(pidFile);
        } catch (err) {
          logger.warn(`cannot remove the pid file ${pidFile}`, { err });
        }
        process.exit(code);
      };
      // `astron-agent stop` waits on the control socket for the exit code; bounded either way.
      setTimeout(end, 1000).unref();
      void control.then((c) => c?.finish(code)).then(end, end);
    },
  });
  const pidFile = settings.SERVICE_PID_FILE;
  if (pidFile) {
    try {
      const other = writePidFile(pidFile);
      if (other) logger.warn(`pid file ${pidFile} named a live process (${other}); overwritten`);
    } catch (err) {
      logger.warn(
        `cannot write the pid file ${pidFile}; \`astron-agent reload\`/\`stop\` will not find this service`,
        { err },
      );
    }
  }
  const notifier = createNotifier(logger);
  if (notifier) {
    pool.on('ready', (n) => notifier.send('READY=1', `STATUS=${n} workers ready`));
    pool.on('reloading', () =>
      notifier.send('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, 'STATUS=reloading'),
    );
    pool.on('reloaded', (result) =>
      notifier.send('READY=1', `STATUS=reload ${result}; ${pool.readyCount()} workers ready`),
    );
    pool.on('stopping', () => notifier.send('STOPPING=1', 'STATUS=stopping'));
  }
  installSignals(pool, logger);
  // Counts from the first fork; prom-client itself loads with the first scrape (scrape-render.ts).
  for (const n of metricsNotices(settings)) logger.warn(n);
  if (settings.METRICS_ENABLE) startClusterMetrics({ pool, settings, logger });
  pool.start();
  const control: Promise<Control | undefined> = settings.SERVICE_CONTROL_SOCKET
    ? startControl({
        path: settings.SERVICE_CONTROL_SOCKET,
        pool,
        logger,
        info: {
          pid: process.pid,
          version: version(),
          startedAt: Date.now(),
          configFile: config.file.path,
          listen: `${settings.SERVICE_HOST}:${settings.SERVICE_PORT}`,
        },
      }).catch((err: unknown) => {
        logger.warn('control socket not started', { err });
        return undefined;
      })
    : Promise.resolve(undefined);
  if (settings.SERVICE_RELOAD) {
    watchForReload(pool, logger, config.file.path).catch((err: unknown) =>
      logger.error('cannot watch files; SERVICE_RELOAD has no effect', { err }),
    );
  }
}
