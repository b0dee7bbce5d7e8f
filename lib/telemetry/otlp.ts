// OTLP metrics push, one MeterProvider per worker (imported by lib/worker/boot.ts only when
// UPLOAD_METRICS is true and OTLP_ENABLE is not false, so a worker without it never loads the
// SDK). Periodic reader at OTLP_METRIC_EXPORT_INTERVAL_MILLIS / _TIMEOUT_MILLIS, OTLP/HTTP JSON
// exporter (timeout OTLP_METRIC_TIMEOUT) to OTLP_ENDPOINT. Instruments: spec 11.2's
// `server_request_total` / `server_request_time_microseconds` with its labels, and the HTTP
// series (read from the Prometheus cells at export time: nothing per request). Exports run in
// the background: a dead or slow collector never delays a request; a
// failed export is logged at warn at most once a minute.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ValueType, type HrTime } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricData,
  type MetricProducer,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import type { Settings } from '../config/settings.js';
import { version } from '../version.js';
import { localIPv4 } from './host.js';
import type { Logger } from './logger.js';
import { CHAT_DURATION_BUCKETS_MS, type WorkerMetrics } from './metrics.js';

type ExportCallback = Parameters<PushMetricExporter['export']>[1];
type ExportResult = Parameters<ExportCallback>[0];
const FAILED = 1; // ExportResultCode.FAILED (@opentelemetry/core)

/** Lets one event through per interval and counts the ones it held back. */
export class RateLimiter {
  private last = -Infinity;
  private held = 0;

  constructor(
    readonly intervalMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** `ok` when this event may be reported; `suppressed` = events held back since the last one. */
  take(): { ok: boolean; suppressed: number } {
    const t = this.now();
    if (t - this.last < this.intervalMs) {
      this.held++;
      return { ok: false, suppressed: this.held };
    }
    const suppressed = this.held;
    this.held = 0;
    this.last = t;
    return { ok: true, suppressed };
  }
}

function hrTime(ms: number): HrTime {
  const secs = Math.floor(ms / 1000);
  return [secs, Math.round((ms - secs * 1000) * 1e6)];
}

/**
 * The HTTP series straight from the Prometheus cells at export time (a MetricProducer), so the
 * push adds nothing to a request: `http_requests_total` (monotonic sum) and
 * `http_request_duration_seconds` (explicit-bucket histogram), cumulative since the worker
 * started.
 */
export function httpSeriesProducer(
  metrics: WorkerMetrics,
  resource: Resource,
  scope: string,
  startMs: number = Date.now(),
): MetricProducer {
  const startTime = hrTime(startMs);
  return {
    collect() {
      const endTime = hrTime(Date.now());
      const cells = metrics.requests.values();
      const bounds = [...metrics.requests.bounds];
      const attributes = (c: (typeof cells)[number]) => ({
        method: c.method,
        route: c.route,
        status: String(c.status),
      });
      const out: MetricData[] = [];
      if (cells.length > 0) {
        out.push({
          descriptor: {
            name: 'http_requests_total',
            description: 'HTTP requests answered, by method, route pattern and status',
            unit: '',
            valueType: ValueType.INT,
          },
          aggregationTemporality: AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.SUM,
          isMonotonic: true,
          dataPoints: cells.map((c) => ({
            startTime,
            endTime,
            attributes: attributes(c),
            value: c.count,
          })),
        });
        out.push({
          descriptor: {
            name: 'http_request_duration_seconds',
            description: 'HTTP request duration in seconds, by method, route pattern and status',
            unit: 's',
            valueType: ValueType.DOUBLE,
          },
          aggregationTemporality: AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.HISTOGRAM,
          dataPoints: cells.map((c) => ({
            startTime,
            endTime,
            attributes: attributes(c),
            value: {
              buckets: { boundaries: bounds, counts: [...c.buckets] },
              sum: c.sum,
              count: c.count,
            },
          })),
        });
      }
      return Promise.resolve({
        resourceMetrics: {
          resource,
          scopeMetrics: out.length > 0 ? [{ scope: { name: scope }, metrics: out }] : [],
        },
        errors: [],
      });
    },
  };
}

export interface OtlpOptions {
  settings: Settings;
  metrics: WorkerMetrics;
  logger: Logger;
}

export interface OtlpHandle {
  /** This worker's `service.instance.id`. */
  readonly instanceId: string;
  /** Final collect and export (graceful stop), bounded by `timeoutMs`. */
  shutdown(timeoutMs: number): Promise<void>;
}

/** Wraps the exporter: failures are logged (rate-limited) and never thrown. */
function guarded(
  inner: PushMetricExporter,
  onFailure: (err: Error | undefined) => void,
): PushMetricExporter {
  return {
    export(data, done) {
      const finish = (r: ExportResult): void => {
        if (r.code === FAILED) onFailure(r.error);
        done(r);
      };
      try {
        inner.export(data, finish);
      } catch (err) {
        finish({ code: FAILED, error: err as Error });
      }
    },
    forceFlush: () => inner.forceFlush(),
    shutdown: () => inner.shutdown(),
    selectAggregationTemporality: inner.selectAggregationTemporality?.bind(inner),
    selectAggregation: inner.selectAggregation?.bind(inner),
  };
}

export function startOtlp({ settings, metrics, logger }: OtlpOptions): OtlpHandle {
  const instanceId = randomUUID();
  const resource = resourceFromAttributes({
    'service.name': settings.SERVICE_NAME,
    'service.instance.id': instanceId,
    'service.version': version(),
    'host.name': hostname(),
    'process.pid': process.pid,
  });
  const limiter = new RateLimiter(60_000);
  const endpoint = settings.OTLP_ENDPOINT;
  const exporter = guarded(
    new OTLPMetricExporter({ url: endpoint, timeoutMillis: settings.OTLP_METRIC_TIMEOUT }),
    (err) => {
      const { ok, suppressed } = limiter.take();
      if (!ok) return;
      logger.warn('OTLP metrics export failed (logged at most once a minute)', {
        endpoint,
        error: err?.message ?? 'unknown error',
        ...(suppressed > 0 ? { failures_not_logged: suppressed } : {}),
      });
    },
  );
  const scope = `${settings.SERVICE_NAME}_meter`;
  const reader = new PeriodicExportingMetricReader({
    exporter,
    metricProducers: [httpSeriesProducer(metrics, resource, scope)],
    exportIntervalMillis: settings.OTLP_METRIC_EXPORT_INTERVAL_MILLIS,
    exportTimeoutMillis: settings.OTLP_METRIC_EXPORT_TIMEOUT_MILLIS,
    maxExportBatchSize: 1000,
  });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const meter = provider.getMeter(scope);

  // Spec 11.2 (recorded by the chat endpoints through metrics.recordChatRequest).
  const base = {
    dc: settings.SERVICE_LOCATION,
    server_host: localIPv4(),
    server_name: settings.SERVICE_NAME,
    pid: process.pid,
  };
  const chatTotal = meter.createCounter('server_request_total', {
    description: 'service entry error count',
  });
  const chatTime = meter.createHistogram('server_request_time_microseconds', {
    description: 'service entry latency (milliseconds, despite the name)',
    unit: 'ms',
    advice: { explicitBucketBoundaries: [...CHAT_DURATION_BUCKETS_MS] },
  });

  meter
    .createObservableUpDownCounter('websocket_connections_open', {
      description: 'Open WebSocket connections',
    })
    .addCallback((obs) => obs.observe(metrics.wsOpen()));
  meter
    .createObservableUpDownCounter('chat_streams_open', {
      description: 'Chat completions in progress (SSE, WebSocket and non-streaming)',
    })
    .addCallback((obs) => obs.observe(metrics.chatStreamsOpen()));

  metrics.setSink({
    chat: (r) => {
      const ret = /^-?\d+$/.test(r.ret) ? Number(r.ret) : r.ret;
      chatTotal.add(1, { ...base, app_id: r.appId, func: r.func, ret });
      chatTime.record(r.durationMs, { ...base, app_id: r.appId, func: r.func });
    },
  });
  logger.debug('OTLP metrics push on', {
    endpoint,
    interval_ms: settings.OTLP_METRIC_EXPORT_INTERVAL_MILLIS,
    instance_id: instanceId,
  });

  let stopping: Promise<void> | undefined;
  return {
    instanceId,
    shutdown(timeoutMs) {
      stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        });
        // shutdown() collects and exports once more, then closes the exporter.
        await Promise.race([provider.shutdown().catch(() => {}), deadline]);
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}
