// `astron-agent start`: load and validate the configuration, then run the worker pool.
import { loadConfig, loadOrReport, type LoadOptions } from '../config/load.js';
import { createLogger } from '../telemetry/logger.js';
import { version } from '../version.js';
import { removePidFile, writePidFile } from './pidfile.js';
import { Pool } from './pool.js';
import { installSignals } from './signals.js';

export function runPrimary(opts: LoadOptions): void {
  const config = loadOrReport(opts);
  if (!config) {
    process.exitCode = 2;
    return;
  }
  const { settings } = config;
  const logger = createLogger({ role: 'primary', level: settings.LOG_LEVEL, format: settings.LOG_FORMAT });
  for (const n of config.notices) logger.warn(n);
  logger.info(`astron-agent ${version()} starting`, {
    config_file: config.file.path,
    settings,
  });

  const pool = new Pool({
    logger,
    config,
    reloadConfig: () => loadConfig(opts),
    exit: (code) => {
      if (pidFile) removePidFile(pidFile);
      process.exit(code);
    },
  });
  const pidFile = settings.SERVICE_PID_FILE;
  if (pidFile) {
    const other = writePidFile(pidFile);
    if (other) logger.warn(`pid file ${pidFile} named a live process (${other}); overwritten`);
  }
  installSignals(pool);
  pool.start();
}
