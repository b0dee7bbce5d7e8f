// Every message between the primary and its workers, in one place.

/** Why a worker is asked to drain; decides its WebSocket close code and its /health answer. */
export type DrainReason = 'stop' | 'reload' | 'scale' | 'recycle';

export type WorkerToPrimary =
  | { t: 'ready'; host: string; port: number }
  | { t: 'boot-error'; message: string; stack?: string; code?: string }
  | { t: 'heartbeat'; requests: number; rss: number };

export type PrimaryToWorker = { t: 'drain'; reason: DrainReason; timeoutMs: number };

function isObject(m: unknown): m is Record<string, unknown> {
  return typeof m === 'object' && m !== null;
}

export function isWorkerMessage(m: unknown): m is WorkerToPrimary {
  return isObject(m) && (m.t === 'ready' || m.t === 'boot-error' || m.t === 'heartbeat');
}

export function isPrimaryMessage(m: unknown): m is PrimaryToWorker {
  return isObject(m) && m.t === 'drain';
}

/** WebSocket close codes used when a worker drains. */
export const WS_CLOSE_GOING_AWAY = 1001;
export const WS_CLOSE_SERVICE_RESTART = 1012;
