// A worker's metrics: one prom-client Registry per worker (built once in lib/worker/boot.ts and
// passed in through deps; no global registry), the hot-path HTTP series, WebSocket and chat
// series, and the worker's half of the cluster scrape over IPC (the primary's half is
// lib/supervisor/scrape.ts). Knows nothing of node:cluster: it talks to the primary through the
// process's IPC channel.
import { performance } from 'node:perf_hooks';
import type { Metric, Registry } from 'prom-client';
import { isMetricsPrimaryMessage, type MetricJson, type MetricsWorkerToPrimary } from '../ipc.js';
import { GEN_AI_DURATION_BUCKETS, GEN_AI_TOKEN_BUCKETS, OP_CHAT } from './semconv.js';

/**
 * The event-loop delay histogram's sampling period (prom-client's eventLoopMonitoringPrecision):
 * its default, 10 ms, is a timer waking every process 100 times a second, about 8 ms of CPU a
 * second each while idle; at 100 ms the lag series still sees any stall longer than that.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Seconds; /health answers in well under a millisecond, chat streams take up to minutes. */
export const HTTP_DURATION_BUCKETS: readonly number[] = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];
/** Milliseconds (spec 11.2: the "microseconds" histogram records milliseconds). */
export const CHAT_DURATION_BUCKETS_MS: readonly number[] = [
  10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000,
];

/** Route label of a request that matched no route: one value, however many raw URLs. */
export const UNMATCHED_ROUTE = 'unmatched';
/** Status of a request whose client went away before the response was complete (nginx's). */
export const CLIENT_CLOSED_STATUS = 499;
/** Value that stands for every label value past a limiter's budget. */
export const OTHER_LABEL = '__other__';
/**
 * Label sets kept per metric (METRICS_MAX_SERIES' default). Per-label budgets alone (500 app_id
 * x 500 func) still allow 250k histogram series, ~4M values shipped over IPC on every scrape.
 */
export const DEFAULT_MAX_SERIES = 500;

// ---- hot path ------------------------------------------------------------------------------

export interface RequestCell {
  method: string;
  route: string;
  status: number;
  count: number;
  sum: number;
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  buckets: number[];
}

/**
 * `http_requests_total` and `http_request_duration_seconds` over the same cells: three map
 * lookups (route, method, status: no string is built) and a few additions per request, ~20 ns
 * (prom-client's labelled histogram hashes the label object on every observation; a key
 * string alone costs ~100 ns). This is what keeps the /health overhead small. The labels are
 * bounded by construction: method (Node's parser accepts a fixed set), route pattern (or
 * `unmatched`), status code.
 */
export class RequestSeries {
  /** route -> method -> status -> cell */
  private readonly tree = new Map<string, Map<string, Map<number, RequestCell>>>();
  private readonly cells: RequestCell[] = [];

  constructor(readonly bounds: readonly number[] = HTTP_DURATION_BUCKETS) {}

  observe(method: string, route: string, status: number, seconds: number): void {
    let byMethod = this.tree.get(route);
    if (byMethod === undefined) this.tree.set(route, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (byStatus === undefined) byMethod.set(method, (byStatus = new Map()));
    let c = byStatus.get(status);
    if (c === undefined) {
      c = {
        method,
        route,
        status,
        count: 0,
        sum: 0,
        buckets: new Array<number>(this.bounds.length + 1).fill(0),
      };
      byStatus.set(status, c);
      this.cells.push(c);
    }
    c.count++;
    c.sum += seconds;
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > b[i]!) i++;
    c.buckets[i]!++;
  }

  values(): readonly RequestCell[] {
    return this.cells;
  }

  counterJson(name: string, help: string): MetricJson {
    const values: MetricJson['values'] = [];
    for (const c of this.cells) {
      values.push({
        value: c.count,
        labels: { method: c.method, route: c.route, status: String(c.status) },
      });
    }
    return { name, help, type: 'counter', aggregator: 'sum', values };
  }

  histogramJson(name: string, help: string): MetricJson {
    const values: MetricJson['values'] = [];
    for (const c of this.cells) {
      const labels = { method: c.method, route: c.route, status: String(c.status) };
      let acc = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        acc += c.buckets[i]!;
        const le = i < this.bounds.length ? this.bounds[i]! : '+Inf';
        values.push({ value: acc, labels: { ...labels, le }, metricName: `${name}_bucket` });
      }
      values.push({ value: c.sum, labels, metricName: `${name}_sum` });
      values.push({ value: c.count, labels, metricName: `${name}_count` });
    }
    return { name, help, type: 'histogram', aggregator: 'sum', values };
  }
}

/**
 * Counter and/or histogram cells over any label tuple (the chat series; not on a hot path).
 * `bounds` undefined = a counter only. At most `maxSeries` label sets; past them, observations
 * of a new label set count in one more set whose labels are all `__other__`.
 */
export class LabeledCells {
  private readonly cells = new Map<
    string,
    { labels: string[]; count: number; sum: number; buckets: number[] }
  >();
  private readonly other: string[];
  private readonly otherKey: string;

  constructor(
    readonly labelNames: readonly string[],
    readonly bounds?: readonly number[],
    public maxSeries = DEFAULT_MAX_SERIES,
  ) {
    this.other = labelNames.map(() => OTHER_LABEL);
    this.otherKey = this.other.join('\u0001');
  }

  /** Label sets held now (the overflow set included). */
  get size(): number {
    return this.cells.size;
  }

  /** Records one observation; returns the labels it was counted under. */
  observe(labels: string[], value = 1): string[] {
    let key = labels.join('\u0001');
    let c = this.cells.get(key);
    if (c === undefined) {
      const full = this.cells.size - (this.cells.has(this.otherKey) ? 1 : 0) >= this.maxSeries;
      if (full) {
        key = this.otherKey;
        labels = this.other;
        c = this.cells.get(key);
      }
    }
    if (c === undefined) {
      c = {
        labels,
        count: 0,
        sum: 0,
        buckets: new Array<number>((this.bounds?.length ?? 0) + 1).fill(0),
      };
      this.cells.set(key, c);
    }
    c.count++;
    c.sum += value;
    if (this.bounds) {
      let i = 0;
      while (i < this.bounds.length && value > this.bounds[i]!) i++;
      c.buckets[i]!++;
    }
    return c.labels;
  }

  private labelsOf(values: string[]): Record<string, string> {
    const out: Record<string, string> = {};
    this.labelNames.forEach((n, i) => (out[n] = values[i]!));
    return out;
  }

  counterJson(name: string, help: string): MetricJson {
    const values = [...this.cells.values()].map((c) => ({
      value: c.count,
      labels: this.labelsOf(c.labels),
    }));
    return { name, help, type: 'counter', aggregator: 'sum', values };
  }

  histogramJson(name: string, help: string): MetricJson {
    const bounds = this.bounds ?? [];
    const values: MetricJson['values'] = [];
    for (const c of this.cells.values()) {
      const labels = this.labelsOf(c.labels);
      let acc = 0;
      for (let i = 0; i <= bounds.length; i++) {
        acc += c.buckets[i]!;
        values.push({
          value: acc,
          labels: { ...labels, le: i < bounds.length ? bounds[i]! : '+Inf' },
          metricName: `${name}_bucket`,
        });
      }
      values.push({ value: c.sum, labels, metricName: `${name}_sum` });
      values.push({ value: c.count, labels, metricName: `${name}_count` });
    }
    return { name, help, type: 'histogram', aggregator: 'sum', values };
  }
}

/** A registry entry whose values come from a function (prom-client calls `get()` on scrape). */
function computed(json: () => MetricJson): Metric {
  const first = json();
  const m = {
    name: first.name,
    help: first.help,
    type: first.type,
    aggregator: 'sum',
    get: async () => json(),
    reset: () => {},
  };
  return m as unknown as Metric;
}

/** Keeps at most `max` distinct values; later new values become `__other__`. */
export class LabelLimiter {
  private readonly seen = new Set<string>();

  constructor(
    readonly max: number,
    readonly maxLength = 128,
  ) {}

  map(raw: unknown): string {
    let v = typeof raw === 'string' ? raw : raw === undefined || raw === null ? '' : String(raw);
    if (v.length > this.maxLength) v = v.slice(0, this.maxLength);
    if (this.seen.has(v)) return v;
    if (this.seen.size >= this.max) return OTHER_LABEL;
    this.seen.add(v);
    return v;
  }
}

// ---- the worker's metrics --------------------------------------------------------------------

/** What a chat endpoint records once per finished request (spec 11.2). */
export interface ChatRequestRecord {
  /** The `app_id` (header). */
  appId: string;
  /** `meta_data.caller`. */
  func: string;
  /** Final code, 0 on success. */
  ret: number | string;
  /** From the start of the run, in milliseconds. */
  durationMs: number;
}

/** One finished LLM call (the GenAI client metrics; lib/agent/llm.ts's LlmCallRecord). */
export interface GenAiCallRecord {
  provider: string;
  requestModel: string;
  serverAddress: string;
  durationS: number;
  ttfcS?: number;
  usage?: { input: number; output: number };
  errorType?: string;
}

/** A GenAI observation with its labels bounded (what the OTLP push receives). */
export interface GenAiLabels {
  provider: string;
  model: string;
  server: string;
  errorType: string;
}

/**
 * A second consumer of the chat observations (the OTLP push; it reads the HTTP series from the
 * cells at export time instead). Labels are already bounded.
 */
export interface MetricsSink {
  chat?(r: { appId: string; func: string; ret: string; durationMs: number }): void;
  genai?(r: {
    labels: GenAiLabels;
    durationS: number;
    ttfcS?: number;
    usage?: { input: number; output: number };
  }): void;
}

export interface ScrapeResult {
  status: number;
  contentType: string;
  body: string;
}

/** The process's IPC channel to the primary, as far as metrics need it. */
export interface IpcChannel {
  send(msg: MetricsWorkerToPrimary, done?: (err: Error | null) => void): void;
  on(event: 'message', fn: (m: unknown) => void): unknown;
  off(event: 'message', fn: (m: unknown) => void): unknown;
  readonly connected: boolean;
}

/** `process` as an IpcChannel, or undefined when the process has no IPC channel. */
export function processChannel(proc: NodeJS.Process = process): IpcChannel | undefined {
  if (typeof proc.send !== 'function') return undefined;
  return {
    send: (msg, done) => {
      if (!proc.connected || !proc.send) {
        done?.(new Error('IPC channel closed'));
        return;
      }
      proc.send(msg, undefined, undefined, (err: Error | null) => done?.(err));
    },
    on: (event, fn) => proc.on(event, fn),
    off: (event, fn) => proc.off(event, fn),
    get connected() {
      return proc.connected;
    },
  };
}

export interface WorkerMetricsOptions {
  /** IPC to the primary: GET /metrics then answers for the whole cluster. */
  channel?: IpcChannel;
  /** How long a worker waits for the primary's answer before a 504 (ms). */
  scrapeTimeoutMs?: number;
  /** Collect prom-client's process/Node.js defaults (default true). */
  defaults?: boolean;
  /** Distinct app_id / func values kept in the chat series before `__other__`. */
  chatLabelLimit?: number;
  /** Label sets kept per chat metric (METRICS_MAX_SERIES); then one all-`__other__` set. */
  maxSeries?: number;
  /**
   * A sink (the OTLP push) will be set after start-up: keep the chat observations made until
   * then (at most 10,000) and hand them over when it is set.
   */
  awaitSink?: boolean;
}

export interface WorkerMetrics {
  readonly requests: RequestSeries;
  /**
   * Builds the prom-client registry (imports prom-client; called after the worker is ready so
   * its ~50 ms of module loading stays out of the start-up path). Idempotent; every collect
   * awaits it. Recording never needs it.
   */
  init(): Promise<Registry>;
  /** Records a finished HTTP request; `startedAt` is `performance.now()` at its start. */
  observeRequest(method: string, route: string, status: number, startedAt: number): void;
  wsOpened(): void;
  wsClosed(): void;
  /** Open WebSocket connections right now. */
  wsOpen(): number;
  /** For the chat endpoints: one call per finished chat/custom-chat request (spec 11.2). */
  recordChatRequest(r: ChatRequestRecord): void;
  /** One finished LLM call: the GenAI client duration, time to first chunk and token usage. */
  recordGenAi(r: GenAiCallRecord): void;
  /** METRICS_MAX_SERIES, when the settings reach the metrics after they were built. */
  limitSeries(max: number): void;
  /** A chat run (SSE, WebSocket or non-streaming) started / ended: the open-streams gauge. */
  chatStreamOpened(): void;
  chatStreamClosed(): void;
  /** Chat runs in progress right now. */
  chatStreamsOpen(): number;
  /** Sets the (single) second consumer, the OTLP push. */
  setSink(sink: MetricsSink | undefined): void;
  /** This worker's series as JSON (what the primary aggregates). */
  snapshot(): Promise<MetricJson[]>;
  /** The whole cluster's metrics through the primary (with a channel), else this process's. */
  scrape(): Promise<ScrapeResult>;
  /** Hands this worker's last values to the primary before a graceful exit. */
  sendFinal(timeoutMs?: number): Promise<void>;
  close(): void;
}

const HTTP_TOTAL_HELP = 'HTTP requests answered, by method, route pattern and status';
const HTTP_TIME_HELP = 'HTTP request duration in seconds, by method, route pattern and status';
const CHAT_TOTAL_HELP =
  'Finished chat requests (spec 11.2), by app_id, func (meta_data.caller) and ret (final code, 0 = success)';
const CHAT_TIME_HELP =
  'Chat request duration, in MILLISECONDS despite the name (spec 11.2), by app_id and func';
const GENAI_DURATION_HELP = 'GenAI operation duration (gen_ai.client.operation.duration), seconds';
const GENAI_TTFC_HELP =
  'Time to the first chunk of a streamed LLM answer (gen_ai.client.operation.time_to_first_chunk), seconds';
const GENAI_TOKENS_HELP =
  'Input and output tokens per LLM call, as the upstream reported them (gen_ai.client.token.usage)';
const GENAI_LABELS = [
  'gen_ai_operation_name',
  'gen_ai_provider_name',
  'gen_ai_request_model',
  'server_address',
] as const;

export function createWorkerMetrics(opts: WorkerMetricsOptions = {}): WorkerMetrics {
  const requests = new RequestSeries();
  const maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
  const chatTotal = new LabeledCells(['app_id', 'func', 'ret'], undefined, maxSeries);
  const chatTime = new LabeledCells(['app_id', 'func'], CHAT_DURATION_BUCKETS_MS, maxSeries);
  const limit = opts.chatLabelLimit ?? 500;
  const appIds = new LabelLimiter(limit);
  const funcs = new LabelLimiter(limit);
  const rets = new LabelLimiter(200);
  // The GenAI series (OTel names as the OTel-to-Prometheus mapping renders them).
  const genaiTime = new LabeledCells(
    [...GENAI_LABELS, 'error_type'],
    GEN_AI_DURATION_BUCKETS,
    maxSeries,
  );
  const genaiTtfc = new LabeledCells(GENAI_LABELS, GEN_AI_DURATION_BUCKETS, maxSeries);
  const genaiTokens = new LabeledCells(
    [...GENAI_LABELS, 'gen_ai_token_type'],
    GEN_AI_TOKEN_BUCKETS,
    maxSeries,
  );
  const models = new LabelLimiter(limit);
  const servers = new LabelLimiter(limit);
  const providers = new LabelLimiter(50);
  const errorTypes = new LabelLimiter(200);
  let sink: MetricsSink | undefined;
  let early: ((s: MetricsSink) => void)[] | undefined = opts.awaitSink ? [] : undefined;
  const keep = (fn: (s: MetricsSink) => void): void => {
    if (early && early.length < 10_000) early.push(fn);
  };
  let wsOpen = 0;
  let wsTotal = 0;
  let chatOpen = 0;

  let registry: Promise<Registry> | undefined;
  const init = (): Promise<Registry> =>
    // `default` is prom-client's module.exports, natively and in the bundle (where a CommonJS
    // module imported by import() has no named exports).
    (registry ??= import('prom-client').then(({ default: { Registry, collectDefaultMetrics } }) => {
      const r = new Registry();
      if (opts.defaults !== false)
        collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
      r.registerMetric(
        computed(() => requests.counterJson('http_requests_total', HTTP_TOTAL_HELP)),
      );
      r.registerMetric(
        computed(() => requests.histogramJson('http_request_duration_seconds', HTTP_TIME_HELP)),
      );
      r.registerMetric(
        computed(() => ({
          name: 'websocket_connections_open',
          help: 'Open WebSocket connections',
          type: 'gauge',
          aggregator: 'sum',
          values: [{ value: wsOpen, labels: {} }],
        })),
      );
      r.registerMetric(
        computed(() => ({
          name: 'websocket_connections_total',
          help: 'WebSocket connections accepted',
          type: 'counter',
          aggregator: 'sum',
          values: [{ value: wsTotal, labels: {} }],
        })),
      );
      r.registerMetric(
        computed(() => ({
          name: 'chat_streams_open',
          help: 'Chat completions in progress (SSE, WebSocket and non-streaming)',
          type: 'gauge',
          aggregator: 'sum',
          values: [{ value: chatOpen, labels: {} }],
        })),
      );
      r.registerMetric(
        computed(() => chatTotal.counterJson('server_request_total', CHAT_TOTAL_HELP)),
      );
      r.registerMetric(
        computed(() => chatTime.histogramJson('server_request_time_microseconds', CHAT_TIME_HELP)),
      );
      r.registerMetric(
        computed(() =>
          genaiTime.histogramJson('gen_ai_client_operation_duration_seconds', GENAI_DURATION_HELP),
        ),
      );
      r.registerMetric(
        computed(() =>
          genaiTtfc.histogramJson(
            'gen_ai_client_operation_time_to_first_chunk_seconds',
            GENAI_TTFC_HELP,
          ),
        ),
      );
      r.registerMetric(
        computed(() => genaiTokens.histogramJson('gen_ai_client_token_usage', GENAI_TOKENS_HELP)),
      );
      return r;
    }));
  const snapshot = async (): Promise<MetricJson[]> =>
    (await (await init()).getMetricsAsJSON()) as unknown as MetricJson[];

  // ---- IPC with the primary ----
  const channel = opts.channel;
  const waitMs = (opts.scrapeTimeoutMs ?? 1000) + 2000;
  let nextId = 0;
  const pending = new Map<number, { resolve: (r: ScrapeResult) => void; timer: NodeJS.Timeout }>();

  const onMessage = (m: unknown): void => {
    if (!isMetricsPrimaryMessage(m)) return;
    if (m.t === 'metrics-collect') {
      snapshot().then(
        (metrics) => channel?.send({ t: 'metrics-snapshot', round: m.round, metrics }),
        () => {
          /* an unreadable registry: the primary counts this worker as missing */
        },
      );
      return;
    }
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    clearTimeout(p.timer);
    p.resolve({ status: m.status, contentType: m.contentType, body: m.body });
  };
  channel?.on('message', onMessage);

  const unavailable = (status: number, why: string): ScrapeResult => ({
    status,
    contentType: 'text/plain; charset=utf-8',
    body: `metrics: ${why}\n`,
  });

  return {
    requests,
    init,
    observeRequest(method, route, status, startedAt) {
      const seconds = (performance.now() - startedAt) / 1000;
      requests.observe(method, route, status, seconds);
    },
    wsOpened() {
      wsOpen++;
      wsTotal++;
    },
    wsClosed() {
      wsOpen--;
    },
    wsOpen: () => wsOpen,
    chatStreamOpened() {
      chatOpen++;
    },
    chatStreamClosed() {
      chatOpen--;
    },
    chatStreamsOpen: () => chatOpen,
    recordChatRequest(r) {
      const appId = appIds.map(r.appId);
      const func = funcs.map(r.func);
      const ret = rets.map(r.ret);
      const ms = Number.isFinite(r.durationMs) && r.durationMs >= 0 ? r.durationMs : 0;
      const counted = chatTotal.observe([appId, func, ret]);
      chatTime.observe([appId, func], ms);
      // The OTLP push gets the same bounded label sets.
      const rec = { appId: counted[0]!, func: counted[1]!, ret: counted[2]!, durationMs: ms };
      if (sink) sink.chat?.(rec);
      else if (early) keep((s) => s.chat?.(rec));
    },
    recordGenAi(r) {
      const labels: GenAiLabels = {
        provider: providers.map(r.provider),
        model: models.map(r.requestModel),
        server: servers.map(r.serverAddress),
        errorType: r.errorType ? errorTypes.map(r.errorType) : '',
      };
      const base = [OP_CHAT, labels.provider, labels.model, labels.server];
      const finite = (v: number) => (Number.isFinite(v) && v >= 0 ? v : 0);
      const counted = genaiTime.observe([...base, labels.errorType], finite(r.durationS));
      // The overflow set (__other__) for every GenAI series once one is full.
      if (counted[1] === OTHER_LABEL) labels.provider = labels.model = labels.server = OTHER_LABEL;
      const ttfcS = r.ttfcS !== undefined && !r.errorType ? finite(r.ttfcS) : undefined;
      if (ttfcS !== undefined) genaiTtfc.observe(base, ttfcS);
      if (r.usage) {
        genaiTokens.observe([...base, 'input'], finite(r.usage.input));
        genaiTokens.observe([...base, 'output'], finite(r.usage.output));
      }
      const rec = { labels, durationS: finite(r.durationS), ttfcS, usage: r.usage };
      if (sink) sink.genai?.(rec);
      else if (early) keep((s) => s.genai?.(rec));
    },
    limitSeries(max) {
      chatTotal.maxSeries = max;
      chatTime.maxSeries = max;
      genaiTime.maxSeries = max;
      genaiTtfc.maxSeries = max;
      genaiTokens.maxSeries = max;
    },
    setSink(s) {
      sink = s;
      if (s && early) for (const replay of early) replay(s);
      early = undefined;
    },
    snapshot,
    async scrape() {
      if (!channel) {
        const r = await init();
        return { status: 200, contentType: r.contentType, body: await r.metrics() };
      }
      if (!channel.connected) return unavailable(503, 'no primary');
      const id = ++nextId;
      return await new Promise<ScrapeResult>((resolve) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          resolve(unavailable(504, 'the primary did not answer in time'));
        }, waitMs);
        pending.set(id, { resolve, timer });
        channel.send({ t: 'metrics-scrape', id }, (err) => {
          if (!err) return;
          pending.delete(id);
          clearTimeout(timer);
          resolve(unavailable(503, 'no primary'));
        });
      });
    },
    async sendFinal(timeoutMs = 1000) {
      if (!channel?.connected) return;
      const metrics = await snapshot();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        channel.send({ t: 'metrics-snapshot', round: 0, final: true, metrics }, () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
    close() {
      channel?.off('message', onMessage);
      for (const p of pending.values()) clearTimeout(p.timer);
      pending.clear();
    },
  };
}
