// Cluster-wide metrics, the rendering half: prom-client, loaded by lib/supervisor/scrape.ts at the
// first scrape, not at start (prom-client, its default metrics and their timers are ~1 MB of an
// idle primary's 45 MB). Builds the primary's own registry from what scrape.ts counted since the
// start (restarts, reloads, reload durations), then aggregates and renders the workers'
// snapshots one metric family at a time.
import {
  AggregatorRegistry,
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
} from 'prom-client';
import type { MetricJson } from '../ipc.js';
import { EVENT_LOOP_SAMPLE_MS } from '../telemetry/metrics.js';
import type { Pool } from './pool.js';
import { labelSetKey } from './series-key.js';

type Value = MetricJson['values'][number];

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

/** Series present from the first scrape, at 0 until they happen. */
const RESTART_REASONS = ['crash', 'hung', 'memory', 'requests', 'reload'];
const RELOAD_RESULTS = ['ok', 'aborted', 'invalid-config'];

/**
 * The supervisor's counters, kept by scrape.ts from the first fork without prom-client; the
 * registry built here reads them, so a restart before anyone scraped still counts.
 */
export interface SupervisorTally {
  readonly restarts: Map<string, number>;
  readonly reloads: Map<string, number>;
  /** Reload durations not yet observed by the registry's histogram (none once it exists). */
  readonly pendingReloads: { result: string; seconds: number }[];
  /** Queues a duration until the registry exists, then observes it there. */
  observeReload(result: string, seconds: number): void;
  departedWorkers(): number;
}

export interface PrimaryRegistry {
  registry: Registry;
  /** What the last collect round left out, and how long it took. */
  setRound(missing: number, ms: number): void;
}

/**
 * The primary's own series: its process (default metrics, counted from this first scrape on),
 * the pool's state, the supervisor's counters from `tally` (kept since the start).
 */
export function primaryRegistry(
  pool: Pick<Pool, 'workers' | 'inFlight' | 'dispatchStats'>,
  tally: SupervisorTally,
  leastconn: boolean,
): PrimaryRegistry {
  const registry = new Registry();
  collectDefaultMetrics({
    register: registry,
    prefix: 'astron_agent_primary_',
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });
  new Gauge({
    name: 'astron_agent_workers_ready',
    help: 'Workers ready and serving',
    registers: [registry],
    collect() {
      this.set(pool.workers().filter((w) => w.state === 'ready').length);
    },
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
  if (leastconn) dispatchMetrics(registry, pool);
  new Counter({
    name: 'astron_agent_worker_restarts_total',
    help: 'Workers replaced, by reason (crash, hung, memory, requests, reload)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const reason of new Set([...RESTART_REASONS, ...tally.restarts.keys()]))
        this.inc({ reason }, tally.restarts.get(reason) ?? 0);
    },
  });
  new Counter({
    name: 'astron_agent_reloads_total',
    help: 'Rolling reloads, by result (ok, aborted, invalid-config)',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const result of new Set([...RELOAD_RESULTS, ...tally.reloads.keys()]))
        this.inc({ result }, tally.reloads.get(result) ?? 0);
    },
  });
  const reloadTime = new Histogram({
    name: 'astron_agent_reload_duration_seconds',
    help: 'Rolling reload duration in seconds, by result',
    labelNames: ['result'],
    buckets: [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    registers: [registry],
  });
  // From now on each reload is observed as it ends; the ones before this scrape once, here.
  tally.observeReload = (result, seconds) => reloadTime.observe({ result }, seconds);
  for (const { result, seconds } of tally.pendingReloads.splice(0))
    tally.observeReload(result, seconds);
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
      this.inc(tally.departedWorkers());
    },
  });
  return {
    registry,
    setRound(n, ms) {
      missing.set(n);
      scrapeTime.set(ms / 1000);
    },
  };
}
