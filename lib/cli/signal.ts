// `astron-agent reload` / `stop`: signal the running primary found through its pid file.
import { loadOrReport, type LoadOptions } from '../config/load.js';
import { isAlive, readPid } from '../supervisor/pidfile.js';

export function signalRunning(opts: LoadOptions, signal: 'SIGHUP' | 'SIGTERM'): number {
  const config = loadOrReport(opts);
  if (!config) return 2;
  const path = config.settings.SERVICE_PID_FILE;
  if (!path) {
    process.stderr.write('SERVICE_PID_FILE is empty: no pid file to find the running service\n');
    return 1;
  }
  const pid = readPid(path);
  if (pid === null || !isAlive(pid)) {
    process.stderr.write(`no running astron-agent found through ${path}\n`);
    return 1;
  }
  process.kill(pid, signal);
  process.stdout.write(
    `sent ${signal} to astron-agent primary ${pid} (${signal === 'SIGHUP' ? 'rolling reload' : 'graceful stop'})\n`,
  );
  return 0;
}
