// Tracing as the request path sees it. The SDK (provider, batch processor, OTLP exporter, W3C
// propagator) is registered by lib/telemetry/otlp-traces.ts, imported by lib/worker/boot.ts only
// when OTEL_TRACES_EXPORTER=otlp; it hands over @opentelemetry/api, which nothing else here
// loads. Until then tracer() is a no-op tracer of our own, so every span below is a non-recording
// span and attribute building is skipped (`isRecording()`); the HTTP server span, on the hot path
// of /health, is not even started.
import type { IncomingMessage } from 'node:http';
import type * as OtelApi from '@opentelemetry/api';
import type {
  Attributes,
  Context,
  Span,
  SpanContext,
  SpanKind,
  SpanStatusCode,
  Tracer,
} from '@opentelemetry/api';
import { version } from '../version.js';
import {
  CLIENT_ADDRESS,
  ERROR_TYPE,
  HTTP_REQUEST_METHOD,
  HTTP_RESPONSE_STATUS_CODE,
  HTTP_ROUTE,
  NETWORK_PROTOCOL_VERSION,
  SCHEMA_URL,
  SERVER_ADDRESS,
  SERVER_PORT,
  URL_PATH,
  URL_SCHEME,
  USER_AGENT_ORIGINAL,
} from './semconv.js';

export const TRACER_NAME = 'astron-agent';

export interface TracingOptions {
  /** OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: messages, tool arguments and results. */
  captureContent: boolean;
  /** Also emit the GenAI attributes deprecated since v1.37.0 (gen_ai.system). */
  legacyGenAi: boolean;
}

const state: TracingOptions & { on: boolean } = {
  on: false,
  captureContent: false,
  legacyGenAi: true,
};
let cachedTracer: Tracer | undefined;
/** @opentelemetry/api, handed over by the SDK module when tracing starts. */
let api: typeof OtelApi | undefined;

/** The API's SpanKind and SpanStatusCode values (its enums; importing them would load it). */
export const KIND = {
  INTERNAL: 0 as SpanKind.INTERNAL,
  SERVER: 1 as SpanKind.SERVER,
  CLIENT: 2 as SpanKind.CLIENT,
};
export const STATUS_ERROR = 2 as SpanStatusCode.ERROR;

const INVALID_SPAN_CONTEXT: SpanContext = {
  traceId: '00000000000000000000000000000000',
  spanId: '0000000000000000',
  traceFlags: 0,
};
/** What the API's no-op tracer hands out: records nothing, carries no context. */
const NOOP_SPAN: Span = {
  spanContext: () => INVALID_SPAN_CONTEXT,
  setAttribute: () => NOOP_SPAN,
  setAttributes: () => NOOP_SPAN,
  addEvent: () => NOOP_SPAN,
  addLink: () => NOOP_SPAN,
  addLinks: () => NOOP_SPAN,
  setStatus: () => NOOP_SPAN,
  updateName: () => NOOP_SPAN,
  end: () => {},
  isRecording: () => false,
  recordException: () => {},
};
const NOOP_TRACER = {
  startSpan: () => NOOP_SPAN,
  startActiveSpan: (...args: unknown[]) =>
    (args[args.length - 1] as (s: Span) => unknown)(NOOP_SPAN),
} as unknown as Tracer;

/** True once a tracer provider is registered in this process (OTEL_TRACES_EXPORTER=otlp). */
export function tracingOn(): boolean {
  return state.on;
}

export function tracingOptions(): Readonly<TracingOptions> {
  return state;
}

/** Called by the SDK module once its provider and propagator are registered. */
export function tracingStarted(opts: TracingOptions, otelApi: typeof OtelApi): void {
  api = otelApi;
  cachedTracer = undefined;
  state.on = true;
  state.captureContent = opts.captureContent;
  state.legacyGenAi = opts.legacyGenAi;
}

/** Called when the provider shuts down: spans started later are no-ops again. */
export function tracingStopped(): void {
  state.on = false;
}

/**
 * The service's tracer: a no-op tracer until (and unless) the SDK registers a provider, then the
 * API's global proxy (the SDK's tracer).
 */
export function tracer(): Tracer {
  if (!api) return NOOP_TRACER;
  return (cachedTracer ??= api.trace
    .getTracerProvider()
    .getTracer(TRACER_NAME, version(), { schemaUrl: SCHEMA_URL }));
}

/** `OTEL_SEMCONV_STABILITY_OPT_IN` as the conventions define it: a comma-separated list. */
export function legacyGenAiWanted(optIn: string): boolean {
  return !optIn
    .split(',')
    .map((s) => s.trim())
    .includes('gen_ai_latest_experimental');
}

// ---- errors ---------------------------------------------------------------------------------

/**
 * `error.type` and the business code of a failure: an AgentError's code (a fixed set, so a
 * bounded value), `cancelled` for a run the client abandoned, else the error's class name.
 */
export function errorInfo(err: unknown): { type: string; code?: number } {
  const e = err as { name?: unknown; code?: unknown } | null | undefined;
  if (e?.name === 'RunAbortedError') return { type: 'cancelled' };
  if (e?.name === 'AgentError' && typeof e.code === 'number')
    return { type: String(e.code), code: e.code };
  return { type: typeof e?.name === 'string' && e.name !== '' ? e.name : '_OTHER' };
}

/** Marks a span failed: status ERROR (not for a cancelled run), error.type, the business code. */
export function recordError(span: Span, err: unknown, codeAttr: string): void {
  if (!span.isRecording()) return;
  const { type, code } = errorInfo(err);
  span.setAttribute(ERROR_TYPE, type);
  if (code !== undefined) span.setAttribute(codeAttr, code);
  if (type !== 'cancelled') {
    span.setStatus({
      code: STATUS_ERROR,
      message: err instanceof Error ? err.message : String(err),
    });
  }
}

// ---- context passing ------------------------------------------------------------------------

/** The context of a span, as a parent for the next one (undefined when not recording). */
export function spanContext(span: Span, parent: Context | undefined): Context | undefined {
  // A span the sampler dropped still carries its (unsampled) context: children and the
  // upstream's traceparent must follow that decision. A recording span's ids are the SDK's own,
  // so only a non-recording one needs the check (a regex test of both ids, per span).
  if (!api) return parent;
  if (!span.isRecording() && !api.trace.isSpanContextValid(span.spanContext())) return parent;
  return api.trace.setSpan(parent ?? api.ROOT_CONTEXT, span);
}

/** Adds `traceparent` (and `tracestate`) of `ctx` to outgoing request headers. */
export function injectTraceHeaders(
  ctx: Context | undefined,
  headers: Record<string, string | number | string[]>,
): void {
  if (ctx === undefined || !api) return;
  api.propagation.inject(ctx, headers);
}

// ---- the HTTP server span -------------------------------------------------------------------

const requestContexts = new WeakMap<IncomingMessage, Context>();

export interface ServerSpan {
  /** Names and ends the span once the response is done (or the client went away). */
  end(route: string, status: number): void;
}

/**
 * Starts the server span of a request, continuing the caller's trace (W3C traceparent and
 * tracestate, through the registered propagator). Undefined when tracing is off.
 */
export function startServerSpan(req: IncomingMessage): ServerSpan | undefined {
  if (!state.on || !api) return undefined;
  const method = req.method ?? 'GET';
  const parent = api.propagation.extract(api.ROOT_CONTEXT, req.headers);
  const span = tracer().startSpan(method, { kind: KIND.SERVER }, parent);
  // Attributes only for a span the sampler kept (our samplers do not read them).
  if (span.isRecording()) span.setAttributes(serverAttributes(req, method));
  requestContexts.set(req, api.trace.setSpan(parent, span));
  return {
    end(label, status) {
      if (!span.isRecording()) return span.end();
      // The metrics' route label is mount path + route path ("/agent/v1/chat/completions/" for
      // a router's "/"); http.route is the path template a client sees.
      const route = label.length > 1 && label.endsWith('/') ? label.slice(0, -1) : label;
      span.updateName(`${method} ${route}`);
      span.setAttribute(HTTP_ROUTE, route);
      span.setAttribute(HTTP_RESPONSE_STATUS_CODE, status);
      if (status >= 500) {
        span.setAttribute(ERROR_TYPE, String(status));
        span.setStatus({ code: STATUS_ERROR });
      }
      span.end();
    },
  };
}

function serverAttributes(req: IncomingMessage, method: string): Attributes {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const host = req.headers.host ?? '';
  const colon = host.lastIndexOf(':');
  const attributes: Attributes = {
    [HTTP_REQUEST_METHOD]: method,
    [URL_PATH]: q < 0 ? url : url.slice(0, q),
    [URL_SCHEME]: 'http',
    [NETWORK_PROTOCOL_VERSION]: req.httpVersion,
  };
  if (host) {
    attributes[SERVER_ADDRESS] = colon > 0 && !host.endsWith(']') ? host.slice(0, colon) : host;
    const port = colon > 0 ? Number(host.slice(colon + 1)) : NaN;
    if (Number.isInteger(port)) attributes[SERVER_PORT] = port;
  }
  const ua = req.headers['user-agent'];
  if (ua) attributes[USER_AGENT_ORIGINAL] = ua;
  if (req.socket.remoteAddress) attributes[CLIENT_ADDRESS] = req.socket.remoteAddress;
  return attributes;
}

/** The context of a request's server span: the parent of the run it starts. */
export function serverSpanContext(req: IncomingMessage): Context | undefined {
  return requestContexts.get(req);
}

/** The caller's trace context of a request that has no server span (a WebSocket upgrade). */
export function callerContext(req: IncomingMessage): Context | undefined {
  if (!state.on || !api) return undefined;
  return api.propagation.extract(api.ROOT_CONTEXT, req.headers);
}
