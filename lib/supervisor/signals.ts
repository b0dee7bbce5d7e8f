// OS signals -> commands queued for the pool. Nothing here changes the pool's state itself.
import type { Logger } from '../telemetry/logger.js';
import { guarded } from './guard.js';
import type { Command } from './pool.js';

export interface CommandSink {
  enqueue(cmd: Command): void;
}

export function installSignals(pool: CommandSink, log: Logger): () => void {
  const handlers: [NodeJS.Signals, () => void][] = [
    ['SIGTERM', () => pool.enqueue({ kind: 'stop', signal: 'SIGTERM' })],
    ['SIGINT', () => pool.enqueue({ kind: 'stop', signal: 'SIGINT' })],
    ['SIGQUIT', () => pool.enqueue({ kind: 'stop', force: true, signal: 'SIGQUIT' })],
    ['SIGHUP', () => pool.enqueue({ kind: 'reload', reason: 'SIGHUP' })],
    ['SIGTTIN', () => pool.enqueue({ kind: 'scale', delta: 1 })],
    ['SIGTTOU', () => pool.enqueue({ kind: 'scale', delta: -1 })],
  ];
  const installed = handlers.map(
    ([sig, fn]) => [sig, guarded(log, `the ${sig} handler`, fn)] as const,
  );
  for (const [sig, fn] of installed) process.on(sig, fn);
  return () => {
    for (const [sig, fn] of installed) process.off(sig, fn);
  };
}
