// Every message between the primary and its workers, in one place.
import { isPlainObject } from './schema/object.js';

/** Why a worker is asked to drain; decides its WebSocket close code and its /health answer. */
export type DrainReason = 'stop' | 'reload' | 'scale' | 'recycle' | 'hung';

export type WorkerToPrimary =
  | { t: 'ready'; host: string; port: number }
  /** A spare worker finished its dependency init and waits for `activate` before listening. */
  | { t: 'standby' }
  | { t: 'boot-error'; message: string; stack?: string; code?: string }
  /** `inflight`: requests being answered (SSE streams included); `streams`: SSE + WebSocket. */
  | { t: 'heartbeat'; requests: number; rss: number; inflight: number; streams: number }
  /** GET /health/backlog: the whole service's requests in flight, from the primary. */
  | { t: 'backlog'; id: number };

export type PrimaryToWorker =
  | { t: 'drain'; reason: DrainReason; timeoutMs: number }
  /** A spare worker: listen now, then report ready. */
  | { t: 'activate' }
  | { t: 'backlog-result'; id: number; inflight: number; workers: number };

// ---- connection dispatch (SERVICE_SCHEDULING=leastconn: lib/supervisor/dispatch.ts <->
// lib/worker/handoff.ts). Kept apart from the unions above: the pool ignores these.

/** A connection accepted by the primary, sent with the socket as the message's handle. */
export interface ConnMessage {
  t: 'conn';
  id: number;
}

/**
 * The worker's answer to a `conn`: `ok` when it serves the connection (the primary then closes its
 * copy), not ok when it is draining (the primary hands it to another worker). `open` is the
 * worker's count of open connections, this one included; `conns` reports it after closes.
 */
export type HandoffMessage =
  | {
      t: 'conn-ack';
      id: number;
      ok: boolean;
      open: number;
      /** Not ok, but not draining either: the descriptor did not arrive (out of descriptors). */
      retry?: boolean;
    }
  | { t: 'conns'; open: number };

export function isConnMessage(m: unknown): m is ConnMessage {
  return isPlainObject(m) && m.t === 'conn' && typeof m.id === 'number';
}

export function isHandoffMessage(m: unknown): m is HandoffMessage {
  return (
    isPlainObject(m) &&
    typeof m.open === 'number' &&
    ((m.t === 'conn-ack' && typeof m.id === 'number' && typeof m.ok === 'boolean') ||
      m.t === 'conns')
  );
}

export function isWorkerMessage(m: unknown): m is WorkerToPrimary {
  return (
    isPlainObject(m) &&
    (m.t === 'ready' ||
      m.t === 'standby' ||
      m.t === 'boot-error' ||
      m.t === 'heartbeat' ||
      m.t === 'backlog')
  );
}

export function isPrimaryMessage(m: unknown): m is PrimaryToWorker {
  return isPlainObject(m) && (m.t === 'drain' || m.t === 'activate' || m.t === 'backlog-result');
}

/**
 * The deadlines of one drain, nested so that a worker that drains in time is never killed: it
 * answers requests until `timeoutMs` minus a cleanup margin, then closes its store, sends its
 * final metrics and flushes OTLP within the margin; the primary kills it only after the whole
 * `timeoutMs` plus KILL_GRACE_MS.
 */
export function drainDeadlines(timeoutMs: number): { requestsMs: number; cleanupMs: number } {
  const cleanupMs = Math.min(2000, Math.floor(timeoutMs / 4));
  return { requestsMs: timeoutMs - cleanupMs, cleanupMs };
}

/** Grace after a worker's own deadline before the primary sends SIGKILL. */
export const KILL_GRACE_MS = 2000;

/** WebSocket close codes used when a worker drains. */
export const WS_CLOSE_GOING_AWAY = 1001;
export const WS_CLOSE_SERVICE_RESTART = 1012;

// ---- cluster-wide metrics (lib/supervisor/scrape.ts <-> lib/telemetry/metrics.ts) -----------
// Kept apart from the unions above: the pool ignores these, scrape.ts handles them.

/** One metric as prom-client's `getMetricsAsJSON()` gives it (the shape `aggregate()` takes). */
export interface MetricJson {
  name: string;
  help: string;
  type: string;
  aggregator?: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

export type MetricsWorkerToPrimary =
  /** The worker answers GET /metrics: it asks the primary for the whole cluster's text. */
  | { t: 'metrics-scrape'; id: number }
  /** Answer to a collect round; `final` is sent once while draining, before the worker exits. */
  | { t: 'metrics-snapshot'; round: number; final?: boolean; metrics: MetricJson[] };

export type MetricsPrimaryToWorker =
  | { t: 'metrics-collect'; round: number }
  | { t: 'metrics-result'; id: number; status: number; contentType: string; body: string };

export function isMetricsWorkerMessage(m: unknown): m is MetricsWorkerToPrimary {
  return isPlainObject(m) && (m.t === 'metrics-scrape' || m.t === 'metrics-snapshot');
}

export function isMetricsPrimaryMessage(m: unknown): m is MetricsPrimaryToWorker {
  return isPlainObject(m) && (m.t === 'metrics-collect' || m.t === 'metrics-result');
}
