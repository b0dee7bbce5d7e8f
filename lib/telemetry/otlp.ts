// OTLP metrics push, one MeterProvider per worker (imported by lib/worker/boot.ts only when
// UPLOAD_METRICS is true and OTLP_ENABLE is not false, so a worker without it never loads the
// SDK). Periodic reader at OTLP_METRIC_EXPORT_INTERVAL_MILLIS / _TIMEOUT_MILLIS, OTLP/HTTP JSON
// exporter (timeout OTLP_METRIC_TIMEOUT) to OTLP_ENDPOINT. Instruments: spec 11.2's
// `server_request_total` / `server_request_time_microseconds` with its labels, and the HTTP
// series (read from the Prometheus cells at export time: nothing per request). Exports run in
// the background: a dead or slow collector never delays a request; a
// failed export is logged at warn at most once a minute.
import { randomUUID } from 'node:crypto';
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
import { localIPv4 } from './host.js';
import type { Logger } from './logger.js';
import { exportFailureWarning, RateLimiter } from './rate-limit.js';
import { resourceAttributes } from './resource.js';
import {
  ERROR_TYPE,
  GEN_AI_DURATION_BUCKETS,
  GEN_AI_OPERATION_NAME,
  GEN_AI_PROVIDER_NAME,
  GEN_AI_REQUEST_MODEL,
  GEN_AI_TOKEN_BUCKETS,
  GEN_AI_TOKEN_TYPE,
  METRIC_OPERATION_DURATION,
  METRIC_TIME_TO_FIRST_CHUNK,
  METRIC_TOKEN_USAGE,
  OP_CHAT,
  SERVER_ADDRESS,
} from './semconv.js';
import { CHAT_DURATION_BUCKETS_MS, type WorkerMetrics } from './metrics.js';
import { within } from './deadline.js';

type ExportCallback = Parameters<PushMetricExporter['export']>[1];
type ExportResult = Parameters<ExportCallback>[0];
const FAILED = 1; // ExportResultCode.FAILED (@opentelemetry/core)

export { RateLimiter };

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
  /** This worker's service.instance.id (shared with the trace export); a new UUID when absent. */
  instanceId?: string;
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

export function startOtlp(opts: OtlpOptions): OtlpHandle {
  const { settings, metrics, logger } = opts;
  const instanceId = opts.instanceId ?? randomUUID();
  const resource = resourceFromAttributes(resourceAttributes(settings, instanceId));
  const endpoint = settings.OTLP_ENDPOINT;
  const exporter = guarded(
    new OTLPMetricExporter({ url: endpoint, timeoutMillis: settings.OTLP_METRIC_TIMEOUT }),
    exportFailureWarning(logger, 'metrics', endpoint),
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

  // GenAI client metrics (semantic conventions v1.41.0: names, units, bucket boundaries).
  const genaiTime = meter.createHistogram(METRIC_OPERATION_DURATION, {
    description: 'GenAI operation duration',
    unit: 's',
    advice: { explicitBucketBoundaries: [...GEN_AI_DURATION_BUCKETS] },
  });
  const genaiTtfc = meter.createHistogram(METRIC_TIME_TO_FIRST_CHUNK, {
    description: 'Time to receive the first chunk of a streamed answer',
    unit: 's',
    advice: { explicitBucketBoundaries: [...GEN_AI_DURATION_BUCKETS] },
  });
  const genaiTokens = meter.createHistogram(METRIC_TOKEN_USAGE, {
    description: 'Number of input and output tokens used',
    unit: '{token}',
    valueType: ValueType.INT,
    advice: { explicitBucketBoundaries: [...GEN_AI_TOKEN_BUCKETS] },
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
    genai: (r) => {
      const attrs = {
        [GEN_AI_OPERATION_NAME]: OP_CHAT,
        [GEN_AI_PROVIDER_NAME]: r.labels.provider,
        [GEN_AI_REQUEST_MODEL]: r.labels.model,
        [SERVER_ADDRESS]: r.labels.server,
      };
      genaiTime.record(
        r.durationS,
        r.labels.errorType ? { ...attrs, [ERROR_TYPE]: r.labels.errorType } : attrs,
      );
      if (r.ttfcS !== undefined) genaiTtfc.record(r.ttfcS, attrs);
      if (r.usage) {
        genaiTokens.record(r.usage.input, { ...attrs, [GEN_AI_TOKEN_TYPE]: 'input' });
        genaiTokens.record(r.usage.output, { ...attrs, [GEN_AI_TOKEN_TYPE]: 'output' });
      }
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
        // shutdown() collects and exports once more, then closes the exporter.
        await within(provider.shutdown(), timeoutMs);
      })();
      return stopping;
    },
  };
}
