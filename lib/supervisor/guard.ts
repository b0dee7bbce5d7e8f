// The primary must outlive a bug in any one of its callbacks: every entry point (signal, timer,
// IPC message, child-process event, file event) is wrapped here, so an exception is logged with
// where it happened and the supervisor carries on. Deliberately not a process-wide
// 'uncaughtException' handler, which would also swallow what nobody guarded.
import type { Logger } from '../telemetry/logger.js';

export function guarded<A extends unknown[]>(
  log: Logger,
  where: string,
  fn: (...args: A) => void,
): (...args: A) => void {
  return (...args: A) => {
    try {
      fn(...args);
    } catch (err) {
      log.error(`supervisor: ${where} failed; carrying on`, { err });
    }
  };
}
