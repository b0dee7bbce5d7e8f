// The trace SDK of a worker, imported by lib/worker/boot.ts only when OTEL_TRACES_EXPORTER=otlp
// (a worker without tracing never loads it). One BasicTracerProvider per worker with the resource
// of the metrics push (same service.instance.id), the sampler of OTEL_TRACES_SAMPLER/_ARG, a
// batch span processor (OTLP_TRACE_*) and the OTLP/HTTP exporter, protobuf by default as OTLP
// says (http/json on request; only the chosen exporter is loaded); the W3C trace context
// propagator reads the callers' traceparent/tracestate and writes the upstreams'.
// Exports run in the background from a bounded queue: a dead or hanging collector drops spans
// (past OTLP_TRACE_MAX_QUEUE_SIZE) but never delays a request; failures are logged at warn at
// most once a minute.
import * as otelApi from '@opentelemetry/api';
import { propagation, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import type { Settings } from '../config/settings.js';
import type { Logger } from './logger.js';
import { exportFailureWarning } from './rate-limit.js';
import { resourceAttributes } from './resource.js';
import { flushEndings, legacyGenAiWanted, tracingStarted, tracingStopped } from './tracing.js';
import { within } from './deadline.js';

type TraceSettings = Pick<
  Settings,
  | 'SERVICE_NAME'
  | 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'
  | 'OTEL_EXPORTER_OTLP_ENDPOINT'
  | 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'
  | 'OTEL_EXPORTER_OTLP_PROTOCOL'
  | 'OTEL_TRACES_SAMPLER'
  | 'OTEL_TRACES_SAMPLER_ARG'
  | 'OTEL_SEMCONV_STABILITY_OPT_IN'
  | 'OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT'
  | 'OTLP_TRACE_TIMEOUT'
  | 'OTLP_TRACE_MAX_QUEUE_SIZE'
  | 'OTLP_TRACE_SCHEDULE_DELAY_MILLIS'
  | 'OTLP_TRACE_MAX_EXPORT_BATCH_SIZE'
  | 'OTLP_TRACE_EXPORT_TIMEOUT_MILLIS'
>;

/**
 * The traces URL as the OTLP exporter specification says: the signal-specific variable verbatim,
 * else the base endpoint with `/v1/traces` appended, else http://localhost:4318/v1/traces.
 */
export function tracesEndpoint(
  s: Pick<Settings, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' | 'OTEL_EXPORTER_OTLP_ENDPOINT'>,
): string {
  if (s.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return s.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = s.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://localhost:4318';
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

/** The encoding as the OTLP exporter specification says: the signal's variable, the general one, protobuf. */
export function tracesProtocol(
  s: Pick<Settings, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL' | 'OTEL_EXPORTER_OTLP_PROTOCOL'>,
): 'http/protobuf' | 'http/json' {
  return s.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || s.OTEL_EXPORTER_OTLP_PROTOCOL || 'http/protobuf';
}

export function samplerFrom(name: Settings['OTEL_TRACES_SAMPLER'], arg: number): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(arg);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(arg) });
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** Wraps the exporter: failures are reported to `onFailure` and never thrown. */
function guarded(inner: SpanExporter, onFailure: (err: Error | undefined) => void): SpanExporter {
  return {
    export(spans, done) {
      try {
        inner.export(spans, (r) => {
          if (r.code !== 0) onFailure(r.error);
          done(r);
        });
      } catch (err) {
        onFailure(err as Error);
        done({ code: 1, error: err as Error });
      }
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}

export interface TracingHandle {
  readonly endpoint: string;
  readonly protocol: 'http/protobuf' | 'http/json';
  /** Exports what is queued and stops, bounded by `timeoutMs`. */
  shutdown(timeoutMs: number): Promise<void>;
}

export async function startTracing(opts: {
  settings: TraceSettings;
  logger: Logger;
  instanceId: string;
}): Promise<TracingHandle> {
  const { settings, logger } = opts;
  const endpoint = tracesEndpoint(settings);
  const protocol = tracesProtocol(settings);
  // Protobuf (the OTLP default) sends less than half the bytes of JSON for the same spans.
  const { OTLPTraceExporter } =
    protocol === 'http/json'
      ? await import('@opentelemetry/exporter-trace-otlp-http')
      : await import('@opentelemetry/exporter-trace-otlp-proto');
  const exporter = guarded(
    new OTLPTraceExporter({ url: endpoint, timeoutMillis: settings.OTLP_TRACE_TIMEOUT }),
    exportFailureWarning(logger, 'trace', endpoint),
  );
  const maxQueueSize = settings.OTLP_TRACE_MAX_QUEUE_SIZE;
  const processor = new BatchSpanProcessor(exporter, {
    maxQueueSize,
    maxExportBatchSize: Math.min(settings.OTLP_TRACE_MAX_EXPORT_BATCH_SIZE, maxQueueSize),
    scheduledDelayMillis: settings.OTLP_TRACE_SCHEDULE_DELAY_MILLIS,
    exportTimeoutMillis: settings.OTLP_TRACE_EXPORT_TIMEOUT_MILLIS,
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes(resourceAttributes(settings, opts.instanceId)),
    sampler: samplerFrom(settings.OTEL_TRACES_SAMPLER, settings.OTEL_TRACES_SAMPLER_ARG),
    spanProcessors: [processor],
  });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  tracingStarted(
    {
      captureContent: settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
      legacyGenAi: legacyGenAiWanted(settings.OTEL_SEMCONV_STABILITY_OPT_IN),
    },
    otelApi,
  );
  logger.debug('OTLP trace export on', {
    endpoint,
    protocol,
    sampler: settings.OTEL_TRACES_SAMPLER,
  });

  let stopping: Promise<void> | undefined;
  return {
    endpoint,
    protocol,
    shutdown(timeoutMs) {
      stopping ??= (async () => {
        tracingStopped();
        flushEndings(); // the spans ended but not yet handed to the SDK
        // shutdown() exports what the batch processor holds, then closes the exporter.
        await within(provider.shutdown(), timeoutMs);
      })();
      return stopping;
    },
  };
}
