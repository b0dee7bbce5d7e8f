// Tracing as the request path sees it. The SDK (provider, batch processor, OTLP exporter, W3C
// propagator) is registered by lib/telemetry/otlp-traces.ts, imported by lib/worker/boot.ts only
// when OTEL_TRACES_EXPORTER=otlp; it hands over @opentelemetry/api, which nothing else here
// loads. Until then tracer() is a no-op tracer of our own, so every span below is a non-recording
// span and attribute building is skipped (`isRecording()`); the HTTP server span, on the hot path
// of /health, is not even started. With tracing on, recording spans end in batches (endSpan).
import type { IncomingMessage } from 'node:http';
import type * as OtelApi from '@opentelemetry/api';
import type {
  Attributes,
  Context,
  Span,
  SpanContext,
  SpanKind,
  SpanStatus,
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

/** What marks a span failed: error.type, the business code, status ERROR (not for a cancelled run). */
export function errorEnding(
  err: unknown,
  codeAttr: string,
): { attributes: Attributes; status?: SpanStatus } {
  const { type, code } = errorInfo(err);
  const attributes: Attributes = { [ERROR_TYPE]: type };
  if (code !== undefined) attributes[codeAttr] = code;
  if (type === 'cancelled') return { attributes };
  const message = err instanceof Error ? err.message : String(err);
  return { attributes, status: { code: STATUS_ERROR, message } };
}

// ---- ending spans in batches ----------------------------------------------------------------

// A span's end (its last attributes, its status, the SDK's end and the batch processor's queue)
// costs several times more run alone, between a request's other work, than run right after
// other spans' ends: the SDK's code and data are no longer in the CPU's caches. Measured in a
// worker under chat load, the first of three spans' start-to-end sets in a row took 150 µs and
// the next two 20-28 µs each. So an ended span is queued with its end time (the SDK takes it as
// an explicit end time, exact to the performance clock) and the queue is finished in one go
// every END_BATCH_MS, or at once when it holds END_BATCH_MAX; the exports come seconds later
// anyway (the batch processor's schedule).
const END_BATCH_MS = 50;
const END_BATCH_MAX = 256;
let endings: (() => void)[] = [];
let endTimer: NodeJS.Timeout | undefined;

const HELD = Symbol('astron.heldAttributes');
type Holding = Span & { [HELD]?: Attributes };

/**
 * Attributes a recording span has from its start, set on it in the end batch with the others
 * (nothing reads a span's attributes before its end, our samplers included): the start of a
 * span, on the request's path, is then only the SDK's startSpan.
 */
export function holdAttributes(span: Span, attributes: Attributes): void {
  (span as Holding)[HELD] = attributes;
}

function setHeld(span: Span): void {
  const held = (span as Holding)[HELD];
  if (!held) return;
  span.setAttributes(held);
  (span as Holding)[HELD] = undefined; // the span waits for its export; its copy is enough
}

/**
 * Ends `span` now, by the clock, with these last attributes, status and name; the SDK's work
 * later, in the batch.
 */
export function endSpan(
  span: Span,
  attributes?: Attributes,
  status?: SpanStatus,
  name?: string,
): void {
  if (!span.isRecording()) return span.end();
  const at = performance.now();
  queueEnding(() => {
    if (name !== undefined) span.updateName(name);
    setHeld(span);
    if (attributes) span.setAttributes(attributes);
    if (status) span.setStatus(status);
    span.end(at);
  });
}

function queueEnding(finish: () => void): void {
  endings.push(finish);
  if (endings.length >= END_BATCH_MAX) flushEndings();
  else endTimer ??= setTimeout(flushEndings, END_BATCH_MS).unref();
}

/** Finishes every queued end (also before the provider shuts down, so that none is lost). */
export function flushEndings(): void {
  if (endTimer) clearTimeout(endTimer);
  endTimer = undefined;
  const batch = endings;
  endings = [];
  for (const finish of batch) {
    try {
      finish();
    } catch {
      // A span the SDK cannot end is lost, never the worker (this runs in a timer).
    }
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

export interface ServerSpan {
  /** Names and ends the span once the response is done (or the client went away). */
  end(route: string, status: number): void;
}

const SERVER = Symbol('astron.serverSpan');
type Carrier = IncomingMessage & { [SERVER]?: LazyServerSpan };

/**
 * The server span of a request, started when first needed with the request's arrival as its
 * start time: by the run a chat request starts (its parent), else at the request's end. So a
 * chat request's span work runs at one point of its life, with its run's spans, rather than
 * also at its arrival (see "ending spans in batches").
 */
class LazyServerSpan implements ServerSpan {
  private context: Context | undefined;
  private span: Span | undefined;

  private readonly method: string;

  constructor(
    private readonly req: IncomingMessage,
    private readonly at: number,
    /** Read at arrival: a socket closed by the time the span starts has no address. */
    private readonly clientAddress: string | undefined,
  ) {
    this.method = req.method ?? 'GET';
  }

  /** The span's context (the parent of the request's run), the span started on first use. */
  open(): Context {
    if (this.context) return this.context;
    const otel = api!;
    const req = this.req;
    const method = this.method;
    // The caller's traceparent/tracestate, through the registered propagator (W3C, which finds
    // nothing without a traceparent).
    const parent =
      req.headers.traceparent === undefined
        ? otel.ROOT_CONTEXT
        : otel.propagation.extract(otel.ROOT_CONTEXT, req.headers);
    const span = tracer().startSpan(method, { kind: KIND.SERVER, startTime: this.at }, parent);
    // Attributes only for a span the sampler kept (our samplers do not read them).
    if (span.isRecording()) holdAttributes(span, serverAttributes(req, method, this.clientAddress));
    this.span = span;
    return (this.context = otel.trace.setSpan(parent, span));
  }

  end(label: string, status: number): void {
    // A request that started no run: its span starts now (with its arrival time). The queued
    // end holds the span and plain values only, not the request (kept alive, it would be
    // promoted by the next scavenge with everything it references).
    this.open();
    const span = this.span!;
    if (!span.isRecording()) return span.end();
    // The metrics' route label is mount path + route path ("/agent/v1/chat/completions/" for
    // a router's "/"); http.route is the path template a client sees.
    const route = label.length > 1 && label.endsWith('/') ? label.slice(0, -1) : label;
    const attributes: Attributes = {
      [HTTP_ROUTE]: route,
      [HTTP_RESPONSE_STATUS_CODE]: status,
    };
    if (status < 500) return endSpan(span, attributes, undefined, `${this.method} ${route}`);
    attributes[ERROR_TYPE] = String(status);
    endSpan(span, attributes, { code: STATUS_ERROR }, `${this.method} ${route}`);
  }
}

/**
 * The server span of a request, continuing the caller's trace (W3C traceparent and tracestate).
 * Undefined when tracing is off.
 */
export function startServerSpan(req: IncomingMessage): ServerSpan | undefined {
  if (!state.on || !api) return undefined;
  const span = new LazyServerSpan(req, performance.now(), req.socket.remoteAddress);
  (req as Carrier)[SERVER] = span;
  return span;
}

function serverAttributes(
  req: IncomingMessage,
  method: string,
  clientAddress: string | undefined,
): Attributes {
  // Express's originalUrl: inside a mounted router req.url is the path below the mount point.
  const url = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';
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
  if (clientAddress) attributes[CLIENT_ADDRESS] = clientAddress;
  return attributes;
}

/** The context of a request's server span: the parent of the run it starts. */
export function serverSpanContext(req: IncomingMessage): Context | undefined {
  return (req as Carrier)[SERVER]?.open();
}

/** The caller's trace context of a request that has no server span (a WebSocket upgrade). */
export function callerContext(req: IncomingMessage): Context | undefined {
  if (!state.on || !api) return undefined;
  return api.propagation.extract(api.ROOT_CONTEXT, req.headers);
}
