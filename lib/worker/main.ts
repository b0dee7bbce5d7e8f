// Worker entry (forked by the primary). Kept tiny: anything that fails while importing or
// booting is reported to the primary as a boot error before the process exits.
import module from 'node:module';
import type { WorkerToPrimary } from '../ipc.js';

// Node >= 22.8: V8's code cache on disk for everything boot.js imports (see bin/agent.ts).
try {
  (module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
} catch {
  /* an optimisation only */
}

function report(err: unknown): void {
  const e = err as NodeJS.ErrnoException;
  const msg: WorkerToPrimary = {
    t: 'boot-error',
    message: e?.message ?? String(err),
    stack: e?.stack,
    code: e?.code,
  };
  if (process.send && process.connected) process.send(msg, () => process.exit(1));
  else process.exit(1);
  setTimeout(() => process.exit(1), 1000).unref();
}

try {
  const { bootWorker } = await import('./boot.js');
  await bootWorker();
} catch (err) {
  report(err);
}
