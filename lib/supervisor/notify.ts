// systemd notify protocol (Type=notify) through the `systemd-notify` command, used only when
// NOTIFY_SOCKET is set. The unit needs NotifyAccess=all: the messages come from a child process.
import { execFile } from 'node:child_process';
import type { Logger } from '../telemetry/logger.js';

export interface Notifier {
  send(...assignments: string[]): void;
}

export function createNotifier(
  logger: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Notifier | null {
  if (!env.NOTIFY_SOCKET) return null;
  let warned = false;
  return {
    send(...assignments: string[]) {
      execFile(
        'systemd-notify',
        [`--pid=${process.pid}`, ...assignments],
        { timeout: 5000 },
        (err) => {
          if (err && !warned) {
            warned = true;
            logger.warn('systemd-notify failed', { err: err.message, assignments });
          }
        },
      );
    },
  };
}

/** CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it (process.hrtime is monotonic). */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
