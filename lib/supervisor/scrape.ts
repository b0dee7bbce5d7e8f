// Cluster-wide metrics, primary side. One scrape = one collect round: the primary asks every
// serving worker over IPC for its registry (as JSON), waits at most METRICS_SCRAPE_TIMEOUT, and
// aggregates what came back with prom-client's aggregation (`AggregatorRegistry.aggregate`, a
// pure function; not its `clusterMetrics()` round-trip, which fails the whole scrape after a
// fixed 5 s when one worker is busy). A worker that does not answer in time is left out and
// counted in `astron_agent_metrics_missing_workers`.
//
// Counters never go backwards (the departed-worker scheme): the primary keeps each worker's
// latest snapshot. Every scrape adds, for each worker that did not answer (busy, stopped,
// disconnected, exited), the counter and histogram values of its latest snapshot; when a worker
// is gone (exited and its IPC channel closed) those values move into one "departed"
// accumulator, summed by series, that every later scrape adds. A worker that drains (reload,
// recycle, scale down, stop) sends a final snapshot after its last request, so nothing it
// counted is lost; a worker killed outright (kill -9, OOM) loses only what it counted since the
// last scrape, which can only make a counter smaller than the truth, never decrease it. Gauges
// (memory, open sockets, ...) of a worker that did not answer are left out: they are not known.
// The accumulator keeps at most METRICS_MAX_SERIES label sets per metric (the union over every
// worker that ever left would grow without end); later ones are summed into one `__other__` set.
import cluster, { type Worker } from 'node:cluster';
import { performance } from 'node:perf_hooks';
import {
  AggregatorRegistry,
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
} from 'prom-client';
import type { Settings } from '../config/settings.js';
import {
  isMetricsWorkerMessage,
  type MetricJson,
  type MetricsPrimaryToWorker,
  type MetricsWorkerToPrimary,
} from '../ipc.js';
import type { Logger } from '../telemetry/logger.js';
import {
  DEFAULT_MAX_SERIES,
  EVENT_LOOP_SAMPLE_MS,
  OTHER_LABEL,
  type ScrapeResult,
} from '../telemetry/metrics.js';
import { guarded } from './guard.js';
import type { Pool } from './pool.js';

type Value = MetricJson['values'][number];

/** IPC send callback: a send to a worker going away fails quietly (its exit is handled). */
const ignore = (): void => {};

/** The series of a snapshot that only ever grow: counters and histograms summed across workers. */
export function monotonicPart(metrics: readonly MetricJson[]): MetricJson[] {
  return metrics.filter(
    (m) =>
      (m.type === 'counter' || m.type === 'histogram') &&
      (m.aggregator === undefined || m.aggregator === 'sum'),
  );
}

function seriesKey(metric: MetricJson, v: Value): string {
  const labels = Object.keys(v.labels)
    .sort()
    .map((k) => `${k}=${String(v.labels[k])}`)
    .join(',');
  return `${v.metricName ?? metric.name}{${labels}}`;
}

/** A histogram's label set without its `le`: what its _bucket, _sum and _count values share. */
function labelSetKey(v: Value): string {
  return Object.keys(v.labels)
    .filter((k) => k !== 'le')
    .sort()
    .map((k) => `${k}=${String(v.labels[k])}`)
    .join(',');
}

function otherLabels(labels: Value['labels']): Value['labels'] {
  const out: Value['labels'] = {};
  for (const k of Object.keys(labels)) out[k] = k === 'le' ? labels[k]! : OTHER_LABEL;
  return out;
}

/** JSON over IPC turns NaN into null: give prom-client a number back. */
function sanitize(metrics: MetricJson[]): MetricJson[] {
  for (const m of metrics) for (const v of m.values) if (typeof v.value !== 'number') v.value = NaN;
  return metrics;
}

/**
 * Pure state of the departed-worker scheme (no processes): the latest snapshot of each worker
 * and the summed counters of the workers that are gone.
 */
export class SnapshotStore {
  private readonly latest = new Map<number, { round: number; metrics: MetricJson[] }>();
  private readonly departed = new Map<
    string,
    { meta: Omit<MetricJson, 'values'>; values: Map<string, Value>; sets: Set<string> }
  >();

  constructor(private readonly maxSeries = DEFAULT_MAX_SERIES) {}
  departedWorkers = 0;
  /** Ids already departed (worker ids are never reused); the oldest are forgotten past 10,000. */
  private readonly gone = new Set<number>();

  /** Keeps the newest snapshot of a worker (a final one is never replaced). */
  update(id: number, round: number, metrics: MetricJson[], final = false): void {
    if (this.gone.has(id)) return; // already in the departed accumulator
    const prev = this.latest.get(id);
    const r = final ? Infinity : round;
    if (!prev || r >= prev.round) this.latest.set(id, { round: r, metrics });
  }

  has(id: number): boolean {
    return this.latest.has(id);
  }

  /** The worker is gone: its counters join the departed accumulator. */
  depart(id: number): void {
    const last = this.latest.get(id);
    this.gone.add(id);
    if (this.gone.size > 10_000) this.gone.delete(this.gone.values().next().value!);
    if (!last) return;
    this.latest.delete(id);
    this.departedWorkers++;
    for (const m of monotonicPart(last.metrics)) {
      let acc = this.departed.get(m.name);
      if (!acc) {
        acc = {
          meta: { name: m.name, help: m.help, type: m.type, aggregator: 'sum' },
          values: new Map(),
          sets: new Set(),
        };
        this.departed.set(m.name, acc);
      }
      for (const v of m.values) {
        let labels = v.labels;
        const set = labelSetKey(v);
        if (!acc.sets.has(set)) {
          if (acc.sets.size < this.maxSeries) acc.sets.add(set);
          else labels = otherLabels(labels);
        }
        const key = seriesKey(m, { ...v, labels });
        const prev = acc.values.get(key);
        if (prev) prev.value += v.value;
        else
          acc.values.set(key, {
            value: v.value,
            labels: { ...labels },
            ...(v.metricName ? { metricName: v.metricName } : {}),
          });
      }
    }
  }

  departedJson(): MetricJson[] {
    return [...this.departed.values()].map(({ meta, values }) => ({
      ...meta,
      values: [...values.values()].map((v) => ({ ...v, labels: { ...v.labels } })),
    }));
  }

  /**
   * What one scrape aggregates: every fresh answer whole; for every other worker still known,
   * the counters of its latest snapshot; the departed accumulator.
   */
  compose(answered: ReadonlyMap<number, MetricJson[]>): MetricJson[][] {
    const arrays: MetricJson[][] = [...answered.values()];
    for (const [id, last] of this.latest)
      if (!answered.has(id)) arrays.push(monotonicPart(last.metrics));
    const departed = this.departedJson();
    if (departed.length > 0) arrays.push(departed);
    return arrays;
  }
}

export interface ScrapeTarget {
  id: number;
  send(msg: MetricsPrimaryToWorker): void;
}

export interface RoundResult {
  arrays: MetricJson[][];
  expected: number;
  missing: number;
  ms: number;
}

/** Fan-out with a deadline; concurrent scrapes share the round in flight. */
export class ClusterScraper {
  readonly store: SnapshotStore;
  private round = 0;
  private inflight?: {
    round: number;
    pending: Set<number>;
    answered: Map<number, MetricJson[]>;
    finish: () => void;
  };
  private current?: Promise<RoundResult>;

  constructor(
    private readonly timeoutMs: number,
    private readonly targets: () => ScrapeTarget[],
    maxSeries = DEFAULT_MAX_SERIES,
  ) {
    this.store = new SnapshotStore(maxSeries);
  }

  /** Every metrics message from a worker goes through here. */
  onSnapshot(id: number, msg: Extract<MetricsWorkerToPrimary, { t: 'metrics-snapshot' }>): void {
    const metrics = sanitize(msg.metrics);
    this.store.update(id, msg.round, metrics, msg.final === true);
    const f = this.inflight;
    if (f && !msg.final && msg.round === f.round && f.pending.delete(id)) {
      f.answered.set(id, metrics);
      if (f.pending.size === 0) f.finish();
    }
  }

  /** The worker exited and its IPC channel is closed: no message of its can still arrive. */
  onGone(id: number): void {
    this.store.depart(id);
    const f = this.inflight;
    if (!f) return;
    // Its values now come from the departed accumulator: never count them twice.
    f.answered.delete(id);
    if (f.pending.delete(id) && f.pending.size === 0) f.finish();
  }

  collect(): Promise<RoundResult> {
    this.current ??= this.runRound().finally(() => {
      this.current = undefined;
    });
    return this.current;
  }

  private runRound(): Promise<RoundResult> {
    const started = performance.now();
    const round = ++this.round;
    const targets = this.targets();
    const pending = new Set<number>();
    const answered = new Map<number, MetricJson[]>();
    return new Promise<RoundResult>((resolve) => {
      const finish = (): void => {
        if (this.inflight?.round !== round) return;
        this.inflight = undefined;
        clearTimeout(timer);
        resolve({
          arrays: this.store.compose(answered),
          expected: targets.length,
          missing: pending.size,
          ms: performance.now() - started,
        });
      };
      this.inflight = { round, pending, answered, finish };
      const timer = setTimeout(finish, this.timeoutMs);
      for (const t of targets) {
        pending.add(t.id);
        try {
          t.send({ t: 'metrics-collect', round });
        } catch {
          // A worker going away: it stays pending and counts as missing.
        }
      }
      if (pending.size === 0) finish();
    });
  }
}

/**
 * Values aggregated and rendered in one turn of the event loop (a label set is never cut, so a
 * slice may exceed it by one label set). On the 2-core test machine a slice of ~2,000 histogram
 * values takes 5-20 ms; the whole chat-duration family at its cap with 2 workers (~17,000
 * values) took 100-150 ms in one task before it was sliced.
 */
export const SLICE_VALUES = 2000;

/** A turn of the event loop: what is waiting (the METRICS_PORT probe, IPC, timers) runs. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * One family (one `MetricJson` per answering array) cut into slices of whole label sets (labels
 * but `le`), in the order each label set first appears. Every value of one series (same
 * metricName and labels) lands in the slice of its label set, so each slice aggregates exactly
 * what the whole family would for its series. Keying the values costs ~1-3 µs each here (20-50
 * ms for that family): it yields every `maxValues` values too.
 */
async function slices(list: MetricJson[][], maxValues: number): Promise<MetricJson[][][]> {
  let total = 0;
  for (const [m] of list) total += m!.values.length;
  if (total <= maxValues) return [list];
  const keys: string[][] = [];
  let keyed = 0;
  for (const [m] of list) {
    const ks: string[] = [];
    for (const v of m!.values) {
      ks.push(labelSetKey(v));
      if (++keyed % maxValues === 0) await turn();
    }
    keys.push(ks);
  }
  const count = new Map<string, number>();
  for (const ks of keys) for (const k of ks) count.set(k, (count.get(k) ?? 0) + 1);
  const sliceOf = new Map<string, number>();
  let n = 0;
  let size = 0;
  for (const [k, c] of count) {
    if (size > 0 && size + c > maxValues) {
      n++;
      size = 0;
    }
    sliceOf.set(k, n);
    size += c;
  }
  const out: MetricJson[][][] = Array.from({ length: n + 1 }, () => []);
  list.forEach(([m], w) => {
    const cut: Value[][] = [];
    m!.values.forEach((v, j) => (cut[sliceOf.get(keys[w]![j]!)!] ??= []).push(v));
    cut.forEach((values, i) => out[i]!.push([{ ...m!, values }]));
  });
  return out;
}

const HEADER = /^(?:# (?:HELP|TYPE) [^\n]*\n)+/;

/**
 * prom-client's aggregation and rendering, one metric family at a time, a family of more than
 * `maxValues` values in slices of whole label sets, with a turn of the event loop between
 * slices: the primary stalls for one slice, not for its largest family (whose size grows with
 * METRICS_MAX_SERIES and the number of workers) nor for the whole scrape. The text is what one
 * `aggregate()` renders: the same lines, in the same order unless workers list different series
 * for one label set (a histogram with other buckets): then that label set's lines come together.
 */
export async function aggregateByFamily(
  arrays: readonly MetricJson[][],
  maxValues = SLICE_VALUES,
): Promise<string> {
  const families = new Map<string, MetricJson[][]>();
  for (const metrics of arrays) {
    for (const m of metrics) {
      const list = families.get(m.name);
      if (list) list.push([m]);
      else families.set(m.name, [[m]]);
    }
  }
  const parts: string[] = [];
  for (const list of families.values()) {
    const lines: string[] = [];
    for (const slice of await slices(list, maxValues)) {
      let text = await AggregatorRegistry.aggregate(slice).metrics();
      if (lines.length > 0) text = text.replace(HEADER, '');
      if (text.trim() !== '') lines.push(text.replace(/\n$/, ''));
      await turn();
    }
    if (lines.length > 0) parts.push(lines.join('\n'));
  }
  return `${parts.join('\n\n')}\n`;
}

export interface ClusterMetrics {
  /** The whole cluster's metrics in the Prometheus text format. */
  render(): Promise<ScrapeResult>;
  readonly scraper: ClusterScraper;
  readonly registry: Registry;
  close(): void;
}

/** SERVICE_SCHEDULING=leastconn: what the primary's connection dispatcher did. */
function dispatchMetrics(registry: Registry, pool: Pick<Pool, 'dispatchStats'>): void {
  const counter = (name: string, help: string, key: 'accepted' | 'redispatched' | 'dropped') =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(pool.dispatchStats()?.[key] ?? 0);
      },
    });
  counter(
    'astron_agent_connections_accepted_total',
    'Connections accepted by the primary (SERVICE_SCHEDULING=leastconn)',
    'accepted',
  );
  counter(
    'astron_agent_connections_redispatched_total',
    'Connections handed to a second worker because the first died or drained before taking them',
    'redispatched',
  );
  counter(
    'astron_agent_connections_dropped_total',
    'Connections closed unserved: the wait for a serving worker was full, or the service stopped',
    'dropped',
  );
  new Gauge({
    name: 'astron_agent_connections_waiting',
    help: 'Connections accepted and waiting for a serving worker (every worker restarting)',
    registers: [registry],
    collect() {
      this.set(pool.dispatchStats()?.waiting ?? 0);
    },
  });
  new Gauge({
    name: 'astron_agent_worker_connections',
    help: 'Open connections per worker, as the dispatcher counts them for least-connections',
    labelNames: ['worker'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [id, n] of pool.dispatchStats()?.perWorker ?? [])
        this.set({ worker: String(id) }, n);
    },
  });
}

export interface ClusterMetricsOptions {
  pool: Pick<Pool, 'on' | 'workers' | 'inFlight' | 'dispatchStats'>;
  settings: Settings;
  logger: Logger;
}

/** Wires the scrape to cluster IPC, the supervisor series to the pool's events, METRICS_PORT. */
export function startClusterMetrics({
  pool,
  settings,
  logger,
}: ClusterMetricsOptions): ClusterMetrics {
  const registry = new Registry();
  collectDefaultMetrics({
    register: registry,
    prefix: 'astron_agent_primary_',
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });
  const ready = new Gauge({
    name: 'astron_agent_workers_ready',
    help: 'Workers ready and serving',
    registers: [registry],
  });
  new Gauge({
    name: 'astron_agent_worker_processes',
    help: 'Worker processes alive, by state (starting, standby, ready, draining)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const by: Record<string, number> = { starting: 0, standby: 0, ready: 0, draining: 0 };
      for (const w of pool.workers()) by[w.state] = (by[w.state] ?? 0) + 1;
      for (const [state, n] of Object.entries(by)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'http_server_active_requests',
    help: "Requests in flight in the whole service (SSE streams included), as of each worker's last heartbeat: for autoscaling on load",
    registers: [registry],
    collect() {
      this.set(pool.inFlight());
    },
  });
  if (settings.SERVICE_SCHEDULING === 'leastconn') dispatchMetrics(registry, pool);
  const restarts = new Counter({
    name: 'astron_agent_worker_restarts_total',
    help: 'Workers replaced, by reason (crash, hung, memory, requests, reload)',
    labelNames: ['reason'],
    registers: [registry],
  });
  for (const reason of ['crash', 'hung', 'memory', 'requests', 'reload'])
    restarts.inc({ reason }, 0);
  const reloads = new Counter({
    name: 'astron_agent_reloads_total',
    help: 'Rolling reloads, by result (ok, aborted, invalid-config)',
    labelNames: ['result'],
    registers: [registry],
  });
  for (const result of ['ok', 'aborted', 'invalid-config']) reloads.inc({ result }, 0);
  const reloadTime = new Histogram({
    name: 'astron_agent_reload_duration_seconds',
    help: 'Rolling reload duration in seconds, by result',
    labelNames: ['result'],
    buckets: [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    registers: [registry],
  });
  const missing = new Gauge({
    name: 'astron_agent_metrics_missing_workers',
    help: 'Workers that did not answer the last scrape within METRICS_SCRAPE_TIMEOUT (their counters keep their last known values)',
    registers: [registry],
  });
  const scrapeTime = new Gauge({
    name: 'astron_agent_metrics_scrape_duration_seconds',
    help: 'How long the last collect round over the workers took',
    registers: [registry],
  });
  new Counter({
    name: 'astron_agent_metrics_departed_workers_total',
    help: 'Workers gone whose last counter values are kept in the cluster totals',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(scraper.store.departedWorkers);
    },
  });

  // Loaded after the pool started: workers may be ready already.
  ready.set(pool.workers().filter((w) => w.state === 'ready').length);
  pool.on('workers', (n) => ready.set(n));
  pool.on('ready', (n) => ready.set(n));
  pool.on('restart', (reason) => restarts.inc({ reason }));
  pool.on('reloaded', (result, ms) => {
    reloads.inc({ result });
    reloadTime.observe({ result }, ms / 1000);
  });

  const targets = (): ScrapeTarget[] => {
    const out: ScrapeTarget[] = [];
    for (const w of pool.workers()) {
      if (w.state === 'starting' || w.state === 'standby') continue;
      const worker = cluster.workers?.[w.id];
      if (!worker || !worker.isConnected()) continue;
      out.push({ id: w.id, send: (msg) => worker.send(msg, undefined, undefined, ignore) });
    }
    return out;
  };
  const scraper = new ClusterScraper(
    settings.METRICS_SCRAPE_TIMEOUT,
    targets,
    settings.METRICS_MAX_SERIES,
  );

  let rendering: Promise<ScrapeResult> | undefined;
  const render = (): Promise<ScrapeResult> => {
    rendering ??= (async () => {
      const round = await scraper.collect();
      missing.set(round.missing);
      scrapeTime.set(round.ms / 1000);
      const workersText = await aggregateByFamily(round.arrays);
      const primaryText = await registry.metrics();
      return {
        status: 200,
        contentType: registry.contentType,
        body: `${primaryText}\n${workersText}`,
      };
    })()
      .catch((err: unknown) => {
        logger.error('metrics scrape failed', { err });
        return { status: 500, contentType: 'text/plain', body: 'metrics: aggregation failed\n' };
      })
      .finally(() => {
        rendering = undefined;
      });
    return rendering;
  };

  const onMessage = guarded(logger, 'a metrics message', (worker: Worker, msg: unknown): void => {
    if (!isMetricsWorkerMessage(msg)) return;
    if (msg.t === 'metrics-snapshot') {
      scraper.onSnapshot(worker.id, msg);
      return;
    }
    void render().then((r) => {
      try {
        const answer: MetricsPrimaryToWorker = { t: 'metrics-result', id: msg.id, ...r };
        if (worker.isConnected()) worker.send(answer, undefined, undefined, ignore);
      } catch {
        // The asking worker is gone.
      }
    });
  });
  const onExit = guarded(logger, 'the metrics exit handler', (worker: Worker): void => {
    const id = worker.id;
    if (!worker.isConnected()) {
      scraper.onGone(id);
      return;
    }
    // Messages still in the channel (a final snapshot) arrive before 'disconnect'.
    const gone = (): void => {
      clearTimeout(t);
      scraper.onGone(id);
    };
    const t = setTimeout(guarded(logger, 'a departed worker', gone), 2000);
    t.unref();
    worker.once('disconnect', guarded(logger, 'a departed worker', gone));
  });
  cluster.on('message', onMessage);
  cluster.on('exit', onExit);

  // node:http is loaded only for METRICS_PORT: an idle primary without it is ~3 MB smaller.
  let server: { close(): void } | undefined;
  let closed = false;
  if (settings.METRICS_PORT > 0) {
    import('./metrics-port.js').then(
      guarded(
        logger,
        'METRICS_PORT',
        ({ serveMetricsPort }: typeof import('./metrics-port.js')) => {
          if (!closed) server = serveMetricsPort(settings, logger, render);
        },
      ),
      (err: unknown) => logger.error('METRICS_PORT: the server could not be loaded', { err }),
    );
  }

  return {
    render,
    scraper,
    registry,
    close() {
      closed = true;
      cluster.off('message', onMessage);
      cluster.off('exit', onExit);
      server?.close();
    },
  };
}

/** Start-up warnings about the metrics settings (logged once by the primary). */
export function metricsNotices(s: Settings): string[] {
  const out: string[] = [];
  if (!s.METRICS_ENABLE && s.METRICS_PORT > 0)
    out.push('METRICS_PORT is ignored: METRICS_ENABLE is false');
  if (s.UPLOAD_METRICS && s.OTLP_ENABLE && new URL(s.OTLP_ENDPOINT).port === '4317') {
    out.push(
      `OTLP_ENDPOINT ${s.OTLP_ENDPOINT} uses port 4317, the OTLP/gRPC port; this service pushes OTLP/HTTP (JSON), usually on port 4318`,
    );
  }
  return out;
}
