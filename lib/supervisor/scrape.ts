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
//
// This half has no prom-client: it is loaded with the primary and keeps the snapshots and the
// supervisor's counters from the start; scrape-render.ts (prom-client, the aggregation, the
// primary's own registry) is loaded by the first scrape.
import cluster, { type Worker } from 'node:cluster';
import { performance } from 'node:perf_hooks';
import type { Settings } from '../config/settings.js';
import {
  isMetricsWorkerMessage,
  type MetricJson,
  type MetricsPrimaryToWorker,
  type MetricsWorkerToPrimary,
} from '../ipc.js';
import type { Logger } from '../telemetry/logger.js';
import { DEFAULT_MAX_SERIES, OTHER_LABEL, type ScrapeResult } from '../telemetry/metrics.js';
import { guarded } from './guard.js';
import type { Pool } from './pool.js';
import type * as RenderModule from './scrape-render.js';
import { labelSetKey, seriesKey } from './series-key.js';

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

export interface ClusterMetrics {
  /** The whole cluster's metrics in the Prometheus text format. */
  render(): Promise<ScrapeResult>;
  readonly scraper: ClusterScraper;
  close(): void;
}

/** Reload durations queued before the first scrape past this load the registry. */
const MAX_PENDING_RELOADS = 256;

export interface ClusterMetricsOptions {
  pool: Pick<Pool, 'on' | 'workers' | 'inFlight' | 'dispatchStats'>;
  settings: Settings;
  logger: Logger;
}

/**
 * Wires the scrape to cluster IPC and the supervisor's counters to the pool's events, and serves
 * METRICS_PORT. prom-client is loaded by the first render.
 */
export function startClusterMetrics({
  pool,
  settings,
  logger,
}: ClusterMetricsOptions): ClusterMetrics {
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

  const tally: RenderModule.SupervisorTally = {
    restarts: new Map(),
    reloads: new Map(),
    pendingReloads: [],
    observeReload(result, seconds) {
      tally.pendingReloads.push({ result, seconds });
      if (tally.pendingReloads.length >= MAX_PENDING_RELOADS) renderer().catch(ignore);
    },
    departedWorkers: () => scraper.store.departedWorkers,
  };
  const bump = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
  // Guarded: a metrics bug must not throw into the pool's state change that emitted the event.
  pool.on(
    'restart',
    guarded(logger, 'the restart counter', (reason: string) => bump(tally.restarts, reason)),
  );
  pool.on(
    'reloaded',
    guarded(logger, 'the reload series', (result: string, ms: number) => {
      bump(tally.reloads, result);
      tally.observeReload(result, ms / 1000);
    }),
  );

  // Loaded once; a failed load (a file missing from a broken install) is retried next time.
  let loading: Promise<Renderer> | undefined;
  const renderer = (): Promise<Renderer> =>
    (loading ??= import('./scrape-render.js')
      .then((m) => ({
        ...m,
        primary: m.primaryRegistry(pool, tally, settings.SERVICE_SCHEDULING === 'leastconn'),
      }))
      .catch((err: unknown) => {
        loading = undefined;
        throw err;
      }));

  let rendering: Promise<ScrapeResult> | undefined;
  const render = (): Promise<ScrapeResult> => {
    rendering ??= (async () => {
      const { aggregateByFamily, primary } = await renderer();
      const round = await scraper.collect();
      primary.setRound(round.missing, round.ms);
      const workersText = await aggregateByFamily(round.arrays);
      const primaryText = await primary.registry.metrics();
      return {
        status: 200,
        contentType: primary.registry.contentType,
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
    close() {
      closed = true;
      cluster.off('message', onMessage);
      cluster.off('exit', onExit);
      server?.close();
    },
  };
}

type Renderer = typeof RenderModule & { primary: RenderModule.PrimaryRegistry };

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
