// The worker pool: one state machine for spawn, ready, restart, drain, reload, scale, stop.
// Signals and file events only enqueue commands (see signals.ts, watch.ts); this is the one
// place where the pool's state changes.
//
// The pool's worst day is what it is built for. Three rules hold everywhere below:
// - A state change is committed only after it succeeded: a reload switches settings,
//   environment, generation and crash policy when its first new worker is ready; an aborted
//   reload leaves (or puts back) all of them, spares included.
// - Nothing throws out of a callback (signal, timer, IPC, child-process event): each entry point
//   runs through guard(), which logs with context and carries on.
// - While running, one worker's failure never kills another: a fork that fails or a replacement
//   that cannot boot is retried with backoff (and, for a lost seat, counted against the crash
//   budget, whose halt is a graceful stop). Every retry backs off.
import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { LoadedConfig } from '../config/load.js';
import { SettingsError, type Settings } from '../config/settings.js';
import { isWorkerMessage, KILL_GRACE_MS, type DrainReason, type PrimaryToWorker } from '../ipc.js';
import type { Logger } from '../telemetry/logger.js';
import type { Dispatcher } from './dispatch.js';
import type { Transport } from './handoff.js';
import { guarded } from './guard.js';
import {
  checkWasLate,
  CrashTracker,
  describeExit,
  retryDelay,
  type RestartPolicy,
} from './policy.js';

export type ReloadResult = 'ok' | 'aborted' | 'invalid-config' | 'stopped';

/** Whoever asked for a command and waits for it (the control socket): told how it went. */
export interface Waiter<R> {
  progress?: (line: string) => void;
  done: (result: R, message: string) => void;
}

export type Command =
  | { kind: 'stop'; force?: boolean; signal?: string }
  | { kind: 'reload'; reason: string; waiter?: Waiter<ReloadResult> }
  | { kind: 'scale'; delta: 1 | -1 }
  | { kind: 'scale-to'; target: number; waiter?: Waiter<'ok' | 'failed' | 'stopped'> }
  | { kind: 'recycle'; id: number; reason: 'memory' | 'requests' };

/** One worker process as `astron-agent status` shows it. */
export interface WorkerStatus {
  /** The seat it holds (stable across replacements); 0 for a spare. */
  slot: number;
  worker: number;
  pid: number;
  role: 'serving' | 'spare' | 'draining' | 'starting';
  generation: number;
  uptime_s: number;
  requests: number;
  inflight: number;
  streams: number;
  /** Open connections, as the dispatcher counts them (SERVICE_SCHEDULING=leastconn only). */
  connections?: number;
  rss: number;
  /** Workers that held this seat before this one. */
  restarts: number;
  last_exit?: SeatExit;
}

/** How the previous worker of a seat ended. */
export interface SeatExit {
  code: number | null;
  signal: string | null;
  reason: string;
  at: string;
}

/** Why a worker was (re)started: decides what a failure to boot means. */
type Purpose = 'boot' | 'replace' | 'reload' | 'scale' | 'recycle' | 'hung' | 'spare';
/** A stop signal this soon after the first is the same stop, repeated by a wrapper. */
export const REPEATED_SIGNAL_MS = 500;
/** Purposes a warm spare may serve (a reload needs the new code, so it always forks). */
const SPARE_SERVES: ReadonlySet<Purpose> = new Set(['replace', 'hung', 'scale', 'recycle']);
export type RestartReason = 'crash' | 'hung' | 'memory' | 'requests' | 'reload';
/** How often the heartbeats are checked. */
const HEARTBEAT_CHECK_MS = 250;

/** What a worker is forked with: one configuration generation. */
interface Generation {
  settings: Settings;
  env: Record<string, string>;
  generation: number;
  /** Whether config.env existed when this generation was read. */
  fileFound: boolean;
}

interface Slot {
  worker: Worker;
  id: number;
  pid: number;
  purpose: Purpose;
  /** standby: a spare, initialised but not listening and not counted, until activated. */
  state: 'starting' | 'standby' | 'ready' | 'draining';
  /** The configuration generation it was forked with (a reload starts a new one). */
  generation: number;
  forkedAt: number;
  readyAt: number;
  /** performance.now() of the last heartbeat (monotonic: wall-clock jumps are no silence). */
  lastBeat: number;
  requests: number;
  rss: number;
  /** Requests after which this worker is recycled (0 = never); jittered per worker. */
  maxRequests: number;
  /** Its seat, stable across replacements (0: a spare, until it takes one). */
  seat: number;
  inflight: number;
  streams: number;
  /** The serving worker this one is booting to replace (reload, recycle): they share a seat. */
  predecessor?: Slot;
  /** A scale-up worker: it takes a new seat only once it is ready. */
  extra?: boolean;
  /** Set when the pool itself ended this worker: its exit is expected, not a crash. */
  retired?: DrainReason | 'killed';
  recycling?: boolean;
  recycleFailures: number;
  /** performance.now() before which no recycle is tried again (after a failed one). */
  recycleNotBefore: number;
  bootError?: string;
  readyTimer?: NodeJS.Timeout;
  killTimer?: NodeJS.Timeout;
  waiters: ((r: 'ready' | 'failed') => void)[];
  exitWaiters: (() => void)[];
}

export interface PoolOptions {
  logger: Logger;
  config: LoadedConfig;
  /** Re-reads config.env with the original environment (for reloads); throws SettingsError. */
  reloadConfig: () => LoadedConfig;
  /** Ends the primary. */
  exit: (code: number) => void;
  random?: () => number;
}

export interface PoolEvents {
  ready: [count: number];
  reloading: [];
  reloaded: [result: 'ok' | 'aborted' | 'invalid-config', durationMs: number];
  stopping: [];
  restart: [reason: RestartReason];
  workers: [ready: number];
}

// From lib/supervisor/ under tsx; from dist/lib/chunks/ in the bundle (tools/bundle.mjs keeps the
// chunks at that depth for this).
const workerExec = fileURLToPath(
  new URL(`../worker/main${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url),
);

function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.message ?? String(err);
}

export class Pool extends EventEmitter<PoolEvents> {
  private readonly slots = new Map<number, Slot>();
  private readonly log: Logger;
  /** The committed configuration: what replacements and spares are forked with. */
  private current: Generation;
  private desired: number;
  private phase: 'booting' | 'running' | 'stopping' = 'booting';
  private exitCode = 0;
  /** When the stop began (performance.now()). */
  private stopAt = 0;
  private readonly queue: Command[] = [];
  private running = false;
  private reloading = false;
  private reloadQueued = false;
  private crashes: CrashTracker;
  /** Replacements waiting for their backoff; each holds the seat it will fill. */
  private readonly pendingReplacements = new Set<NodeJS.Timeout>();
  private hungTimer?: NodeJS.Timeout;
  private lastHeartbeatCheck = 0;
  private stopTimer?: NodeJS.Timeout;
  private readonly random: () => number;
  /** Forks that failed in a row (EMFILE, EAGAIN, ENOMEM): the backoff of the next attempt. */
  private forkFailures = 0;
  /** Spares that died or failed to boot since the last reload; past 3, no more spares. */
  private spareFailures = 0;
  private spareTimer?: NodeJS.Timeout;
  private readonly phaseWaiters: (() => void)[] = [];
  /** Seats whose worker died, waiting for a replacement (it inherits the seat's history). */
  private readonly vacant: number[] = [];
  private readonly seats = new Map<number, { restarts: number; lastExit?: SeatExit }>();
  /** Reload waiters joined to the next reload to start, and those of the one under way. */
  private reloadWaiters: Waiter<ReloadResult>[] = [];
  private activeReloadWaiters: Waiter<ReloadResult>[] = [];
  /** SERVICE_SCHEDULING=leastconn: the primary's listening socket and connection handoff. */
  private dispatcher?: Dispatcher;

  constructor(private readonly opts: PoolOptions) {
    super();
    this.log = opts.logger;
    this.current = {
      settings: opts.config.settings,
      env: opts.config.mergedEnv,
      generation: 0,
      fileFound: opts.config.file.found,
    };
    this.desired = this.settings.SERVICE_WORKERS;
    this.random = opts.random ?? Math.random;
    this.crashes = new CrashTracker(this.policy(), this.random);
  }

  private get settings(): Settings {
    return this.current.settings;
  }

  private policy(): RestartPolicy {
    const s = this.settings;
    return {
      backoffBaseMs: s.SERVICE_RESTART_BACKOFF_BASE,
      backoffMaxMs: s.SERVICE_RESTART_BACKOFF_MAX,
      stableMs: s.SERVICE_RESTART_STABLE,
      budget: s.SERVICE_CRASH_BUDGET,
      windowMs: s.SERVICE_CRASH_WINDOW,
    };
  }

  /** Every callback the primary gets runs through this: a bug in one is logged, not fatal. */
  guard<A extends unknown[]>(where: string, fn: (...args: A) => void): (...args: A) => void {
    return guarded(this.log, where, fn);
  }

  /** A listener of the pool's events that throws must not abort the state change under way. */
  override emit<K extends keyof PoolEvents>(event: K, ...args: PoolEvents[K]): boolean {
    // The serving set changes exactly when 'workers' is emitted: the dispatcher follows it.
    if (event === 'workers') this.dispatcher?.sync(this.servingWorkers());
    try {
      return (super.emit as (e: K, ...a: PoolEvents[K]) => boolean).call(this, event, ...args);
    } catch (err) {
      this.log.error(`supervisor: a listener of '${String(event)}' failed; carrying on`, { err });
      return true;
    }
  }

  private later(ms: number, where: string, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(this.guard(where, fn), ms);
    t.unref();
    return t;
  }

  // ---- public -------------------------------------------------------------------------------

  start(): void {
    const s = this.settings;
    cluster.schedulingPolicy =
      s.SERVICE_SCHEDULING === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: workerExec });
    cluster.on(
      'message',
      this.guard('a worker message', (worker: Worker, msg: unknown) => {
        if (this.dispatcher?.onMessage(worker, msg)) return;
        this.onMessage(worker, msg);
      }),
    );
    cluster.on(
      'exit',
      this.guard('a worker exit', (worker: Worker, code: number, signal: string) => {
        this.dispatcher?.gone(worker.id);
        this.onExit(worker, code, signal);
      }),
    );
    if (s.SERVICE_SCHEDULING !== 'leastconn') {
      this.forkAll();
      return;
    }
    // Loaded for leastconn only: the primary of the other policies never has the handoff code.
    import('./leastconn.js')
      .then((m) => m.createDispatcher(s, this.log, (where, fn) => this.guard(where, fn)))
      .then(
        this.guard('the listening socket', (made: Dispatcher | string) => {
          if (this.phase !== 'booting') return;
          if (typeof made === 'string') {
            this.halt(3, `${made}; stopping (exit 3)`, false);
            return;
          }
          // The port is bound before any worker is forked: it stays the primary's for its whole life.
          this.dispatcher = made;
          made.listen().then(
            this.guard('the listening socket', () => this.forkAll()),
            this.guard('the listening socket', (err: unknown) =>
              this.halt(
                3,
                `cannot listen on ${s.SERVICE_HOST}:${s.SERVICE_PORT}: ${errorText(err)}; stopping (exit 3)`,
                false,
              ),
            ),
          );
        }),
        this.guard('the listening socket', (err: unknown) =>
          this.halt(
            3,
            `cannot load the connection dispatcher: ${errorText(err)}; stopping (exit 3)`,
            false,
          ),
        ),
      );
  }

  private forkAll(): void {
    if (this.phase !== 'booting') return;
    for (let i = 0; i < this.desired; i++) {
      if (this.spawn('boot', { seat: i + 1 })) continue;
      // After the fork's own error (next tick) is logged: it says why.
      setImmediate(
        this.guard('a halt', () =>
          this.halt(3, 'cannot fork the workers; stopping (exit 3)', false),
        ),
      );
      return;
    }
    this.lastHeartbeatCheck = performance.now();
    this.hungTimer = setInterval(
      this.guard('the heartbeat check', () => this.checkHeartbeats()),
      HEARTBEAT_CHECK_MS,
    );
    this.hungTimer.unref();
  }

  /** Connections the dispatcher holds for each worker (leastconn only). */
  dispatchStats(): ReturnType<Dispatcher['stats']> | undefined {
    return this.dispatcher?.stats();
  }

  /** Signals and watchers call this; stop is applied at once, the rest in order. */
  enqueue(cmd: Command): void {
    if (cmd.kind === 'stop') {
      this.stop(cmd.force === true, cmd.signal);
      return;
    }
    if (this.phase === 'stopping') {
      if ('waiter' in cmd) cmd.waiter?.done('stopped', 'the service is stopping');
      return;
    }
    if (cmd.kind === 'reload' && cmd.waiter) this.reloadWaiters.push(cmd.waiter);
    if (
      cmd.kind === 'reload' &&
      (this.reloadQueued || this.queue.some((c) => c.kind === 'reload'))
    ) {
      this.log.info('reload already queued; this request joins it', { reason: cmd.reason });
      return;
    }
    if (cmd.kind === 'reload' && this.reloading) {
      this.reloadQueued = true;
      this.log.info('reload in progress; one more queued', { reason: cmd.reason });
      return;
    }
    this.queue.push(cmd);
    this.drainQueue().catch((err: unknown) =>
      this.log.error('supervisor: a queued command failed; carrying on', {
        err,
        command: cmd.kind,
      }),
    );
  }

  /** A method, not a field read: TypeScript must not narrow it across awaits. */
  private stopping(): boolean {
    return this.phase === 'stopping';
  }

  readyCount(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.state === 'ready') n++;
    return n;
  }

  /** Workers that take new connections: ready and not draining. */
  private servingWorkers(): Worker[] {
    const out: Worker[] = [];
    for (const s of this.slots.values()) if (s.state === 'ready' && !s.retired) out.push(s.worker);
    return out;
  }

  /** Every worker process the pool has (spares and draining ones included), for metrics and tests. */
  workers(): { id: number; pid: number; state: string }[] {
    return [...this.slots.values()].map((s) => ({ id: s.id, pid: s.pid, state: s.state }));
  }

  /** The phase as operators see it. */
  phaseName(): 'booting' | 'running' | 'reloading' | 'stopping' {
    return this.phase === 'running' && this.reloading ? 'reloading' : this.phase;
  }

  /** Serving workers wanted (SERVICE_WORKERS, as scaled). */
  desiredWorkers(): number {
    return this.desired;
  }

  /** Requests in flight in the whole service, as of each worker's last heartbeat. */
  inFlight(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.inflight;
    return n;
  }

  status(): WorkerStatus[] {
    const now = Date.now();
    const conns = this.dispatcher?.stats().perWorker;
    return [...this.slots.values()]
      .map((s): WorkerStatus => {
        const seat = this.seats.get(s.seat);
        return {
          slot: s.seat,
          worker: s.id,
          pid: s.pid,
          role:
            s.state === 'standby'
              ? 'spare'
              : s.state === 'ready'
                ? 'serving'
                : s.state === 'draining'
                  ? 'draining'
                  : s.purpose === 'spare'
                    ? 'spare'
                    : 'starting',
          generation: s.generation,
          uptime_s: Math.round((now - (s.readyAt || s.forkedAt)) / 1000),
          requests: s.requests,
          inflight: s.inflight,
          streams: s.streams,
          connections: conns ? (conns.get(s.id) ?? 0) : undefined,
          rss: s.rss,
          restarts: s.seat ? (seat?.restarts ?? 0) : 0,
          last_exit: s.seat ? seat?.lastExit : undefined,
        };
      })
      .sort((a, b) => (a.slot || 1e9) - (b.slot || 1e9) || a.worker - b.worker);
  }

  // ---- commands -----------------------------------------------------------------------------

  private async drainQueue(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0 && this.phase !== 'stopping') {
        // Start-up must finish before anything else is applied.
        if (this.phase === 'booting') await this.phaseChange();
        if (this.stopping()) return;
        const cmd = this.queue.shift()!;
        if (cmd.kind === 'reload') {
          do {
            this.reloadQueued = false;
            await this.reload(cmd.reason);
          } while (this.reloadQueued && this.phase === 'running');
        } else if (cmd.kind === 'scale') await this.scale(cmd.delta);
        else if (cmd.kind === 'scale-to') await this.scaleTo(cmd.target, cmd.waiter);
        else if (cmd.kind === 'recycle') await this.recycle(cmd.id, cmd.reason);
      }
    } finally {
      this.running = false;
    }
  }

  /** Resolves at the next change of phase (booting -> running, or -> stopping). */
  private phaseChange(): Promise<void> {
    return new Promise((resolve) => this.phaseWaiters.push(resolve));
  }

  private setPhase(phase: 'running' | 'stopping'): void {
    this.phase = phase;
    for (const w of this.phaseWaiters.splice(0)) w();
  }

  /** Reads config.env again; null (and the reason logged) when it cannot be used. */
  private readNextConfig(): LoadedConfig | null {
    let next: LoadedConfig;
    try {
      next = this.opts.reloadConfig();
    } catch (err) {
      if (err instanceof SettingsError) {
        for (const p of err.problems) this.log.error(p);
        this.log.error('reload aborted: invalid configuration; the running workers are untouched');
      } else {
        // EISDIR, EACCES, a file replaced mid-write: the same abort, with the reason.
        this.log.error(
          `reload aborted: cannot read the configuration (${errorText(err)}); the running workers are untouched`,
        );
      }
      return null;
    }
    if (this.current.fileFound && !next.file.found) {
      // A file that was there at start and is gone now is being replaced, or was removed by
      // mistake: reloading would silently fall back to the defaults (another store, another port).
      this.log.error(
        `reload aborted: config file ${next.file.path} is gone (it was read at the last start or reload); the running workers are untouched`,
      );
      return null;
    }
    return next;
  }

  private async reload(reason: string): Promise<void> {
    const started = Date.now();
    this.reloading = true;
    this.activeReloadWaiters = this.reloadWaiters.splice(0);
    this.emit('reloading');
    const before = { current: this.current, crashes: this.crashes, spares: this.spareFailures };
    let committed = false;
    try {
      const next = this.readNextConfig();
      if (!next) {
        this.reloadFinished(
          'invalid-config',
          Date.now() - started,
          'invalid configuration (see the service log)',
        );
        return;
      }
      for (const n of next.notices) this.log.warn(n);
      this.reportLiveChanges(next.settings);
      this.log.info('rolling reload started', { reason, workers: this.servingCount() });
      // The listen address and the scheduling policy stay those of the running primary.
      const fixed = {
        SERVICE_HOST: this.settings.SERVICE_HOST,
        SERVICE_PORT: this.settings.SERVICE_PORT,
        SERVICE_SCHEDULING: this.settings.SERVICE_SCHEDULING,
        SERVICE_HANDOFF: this.settings.SERVICE_HANDOFF,
      };
      const candidate: Generation = {
        settings: { ...next.settings, ...fixed },
        env: {
          ...next.mergedEnv,
          ...Object.fromEntries(Object.entries(fixed).map(([k, v]) => [k, String(v)])),
        },
        generation: this.current.generation + 1,
        fileFound: next.file.found,
      };
      let replaced = 0;
      // Replace every serving worker of an older generation, one at a time; a crash replacement
      // forked during the reload (with the committed settings) is picked up by the next turn.
      for (let prev = this.nextToReplace(candidate); prev; prev = this.nextToReplace(candidate)) {
        if (prev.state === 'starting') {
          await this.waitReady(prev);
          if (this.stopping()) return;
          continue;
        }
        const fresh = this.spawn('reload', { predecessor: prev, gen: candidate });
        const result = fresh ? await this.waitReady(fresh) : 'failed';
        if (this.stopping()) return;
        if (result !== 'ready') {
          this.log.error(
            `reload aborted: a new worker did not become ready${committed ? ` (${replaced} already replaced keep serving)` : ''}; the old workers keep serving`,
            { worker: fresh?.id, error: fresh ? fresh.bootError : 'fork failed' },
          );
          if (committed) this.restore(before);
          committed = false;
          this.reloadFinished(
            'aborted',
            Date.now() - started,
            `a new worker did not become ready (${fresh ? (fresh.bootError ?? 'it exited') : 'fork failed'}); the old workers keep serving`,
          );
          return;
        }
        if (!committed) {
          this.commit(candidate);
          committed = true;
        }
        replaced++;
        this.tellReload(
          `worker ${prev.id} (pid ${prev.pid}) replaced by worker ${fresh!.id} (pid ${fresh!.pid})`,
        );
        this.emit('restart', 'reload');
        if (this.holdsSeat(prev)) this.retire(prev, 'reload');
      }
      if (!committed) this.commit(candidate);
      committed = true;
      // A changed SERVICE_WORKERS applies once every worker runs the new code.
      const target = next.settings.SERVICE_WORKERS;
      while (this.desired < target && this.phase === 'running') {
        if (!(await this.scale(1))) break;
      }
      while (this.desired > target && this.desired > 1 && this.phase === 'running')
        await this.scale(-1);
      const ms = Date.now() - started;
      this.log.info('rolling reload done', { workers: this.readyCount(), duration_ms: ms });
      this.reloadFinished('ok', ms, `${replaced} worker(s) replaced in ${ms} ms`);
    } finally {
      this.reloading = false;
      if (this.activeReloadWaiters.length)
        this.reloadFinished('stopped', Date.now() - started, 'the service is stopping');
      this.ensureSpares();
    }
  }

  private tellReload(line: string): void {
    for (const w of this.activeReloadWaiters) w.progress?.(line);
  }

  private reloadFinished(result: ReloadResult, ms: number, message: string): void {
    if (result !== 'stopped') this.emit('reloaded', result, ms);
    for (const w of this.activeReloadWaiters.splice(0)) w.done(result, message);
  }

  /** `astron-agent scale N`: one worker at a time; removed workers drained before it answers. */
  private async scaleTo(
    target: number,
    waiter?: Waiter<'ok' | 'failed' | 'stopped'>,
  ): Promise<void> {
    const from = this.desired;
    while (this.desired !== target && this.phase === 'running') {
      const up = this.desired < target;
      const victimsBefore = new Set([...this.slots.values()].filter((s) => s.retired === 'scale'));
      if (!(await this.scale(up ? 1 : -1))) {
        waiter?.done('failed', `scaling stopped at ${this.desired} workers (see the service log)`);
        return;
      }
      if (!up) {
        const victim = [...this.slots.values()].find(
          (s) => s.retired === 'scale' && !victimsBefore.has(s),
        );
        waiter?.progress?.(`worker ${victim?.id ?? '?'} draining`);
        if (victim) await this.exitOf(victim);
      }
      waiter?.progress?.(`${this.desired} workers`);
    }
    if (this.stopping()) waiter?.done('stopped', 'the service is stopping');
    else waiter?.done('ok', `${from} -> ${this.desired} workers`);
  }

  /** Resolves when a worker process has exited. */
  private exitOf(slot: Slot): Promise<void> {
    if (!this.slots.has(slot.id)) return Promise.resolve();
    return new Promise((resolve) => slot.exitWaiters.push(resolve));
  }

  /** The next worker a reload to `gen` must replace (or wait for, while it boots). */
  private nextToReplace(gen: Generation): Slot | undefined {
    if (this.phase !== 'running') return undefined;
    for (const s of this.slots.values()) {
      if (s.purpose === 'spare' || s.retired || s.extra || s.generation === gen.generation)
        continue;
      if (s.state === 'ready' || (s.state === 'starting' && !s.predecessor)) return s;
    }
    return undefined;
  }

  /** The reload's first new worker is ready: its configuration is the pool's from now on. */
  private commit(gen: Generation): void {
    this.current = gen;
    this.crashes = new CrashTracker(this.policy(), this.random);
    this.spareFailures = 0;
    // Spares run the old code and settings: end them; new ones follow the reload.
    for (const s of this.slots.values())
      if (s.purpose === 'spare' && s.generation !== gen.generation)
        this.kill(s, 'killed', 'SIGTERM');
    this.log.info('reload committed: the new configuration is live', {
      generation: gen.generation,
    });
  }

  /** An aborted reload puts the previous configuration back (spares follow it). */
  private restore(before: { current: Generation; crashes: CrashTracker; spares: number }): void {
    this.current = before.current;
    this.crashes = before.crashes;
    this.spareFailures = before.spares;
    for (const s of this.slots.values())
      if (s.purpose === 'spare' && s.generation !== before.current.generation)
        this.kill(s, 'killed', 'SIGTERM');
    this.log.warn('reload rolled back: the previous configuration is live again', {
      generation: before.current.generation,
    });
  }

  private reportLiveChanges(next: Settings): void {
    for (const key of [
      'SERVICE_HOST',
      'SERVICE_PORT',
      'SERVICE_SCHEDULING',
      'SERVICE_HANDOFF',
    ] as const) {
      if (next[key] !== this.settings[key]) {
        this.log.warn(
          `${key} changed (${String(this.settings[key])} -> ${String(next[key])}); it cannot change on a reload: restart the service to apply it`,
        );
      }
    }
    if (next.SERVICE_WORKERS !== this.desired) {
      this.log.info('SERVICE_WORKERS changed on reload', {
        from: this.desired,
        to: next.SERVICE_WORKERS,
      });
    }
  }

  /** One worker more or fewer; true when it was applied. */
  private async scale(delta: 1 | -1): Promise<boolean> {
    if (delta > 0) {
      this.log.info('scaling up', { workers: this.desired + 1 });
      // It takes its seat (desired + 1) when ready, so a failure leaves nothing to undo.
      const fresh = this.spawn('scale', { extra: true });
      if (!fresh || (await this.waitReady(fresh)) !== 'ready') {
        this.log.error('scale up failed: the new worker did not become ready', {
          error: fresh ? fresh.bootError : 'fork failed',
        });
        return false;
      }
      this.emit('workers', this.readyCount());
      return true;
    }
    const live = [...this.slots.values()].filter((s) => s.state === 'ready' && !s.retired);
    if (this.desired <= 1 || live.length <= 1) {
      this.log.warn('scale down refused: at least one worker must stay');
      return false;
    }
    this.desired--;
    const victim = live.reduce((a, b) => (b.forkedAt > a.forkedAt ? b : a));
    this.log.info('scaling down', { workers: this.desired, worker: victim.id });
    this.retire(victim, 'scale');
    this.emit('workers', this.readyCount());
    return true;
  }

  private async recycle(id: number, reason: 'memory' | 'requests'): Promise<void> {
    const prev = this.slots.get(id);
    if (!prev || prev.state !== 'ready' || prev.retired) return;
    this.log.info('recycling worker', {
      worker: id,
      worker_pid: prev.pid,
      reason,
      requests: prev.requests,
      rss_mb: Math.round(prev.rss / 1048576),
    });
    const fresh = this.spawn('recycle', { predecessor: prev });
    if (!fresh || (await this.waitReady(fresh)) !== 'ready') {
      // The worker keeps serving; the next attempt waits, doubling per failure.
      prev.recycleFailures++;
      const delay = retryDelay(prev.recycleFailures, this.policy(), this.random);
      prev.recycling = false;
      prev.recycleNotBefore = performance.now() + delay;
      this.log.error(
        `recycle failed: the replacement did not become ready; worker ${id} keeps serving, next attempt in ${delay} ms`,
        { worker: id, error: fresh ? fresh.bootError : 'fork failed' },
      );
      return;
    }
    this.emit('restart', reason);
    if (this.holdsSeat(prev)) this.retire(prev, 'recycle');
  }

  private stop(force: boolean, signal?: string): void {
    if (this.phase === 'stopping') {
      // A wrapper (npm/npx forwarding the Ctrl-C or SIGTERM its process group got, systemd's
      // KillMode=control-group) repeats the signal within milliseconds: that is still one stop.
      if (!force && signal && performance.now() - this.stopAt < REPEATED_SIGNAL_MS) {
        this.log.info(
          `repeated stop signal within ${REPEATED_SIGNAL_MS} ms ignored (a wrapper forwarding it); a later one forces a fast stop`,
          { signal },
        );
        return;
      }
      if (force || signal) {
        this.log.warn('second stop signal: forcing a fast stop', { signal });
        this.exitCode = this.exitCode || 1;
        for (const s of this.slots.values()) s.worker.process.kill('SIGKILL');
        this.finishIfEmpty();
      }
      return;
    }
    this.setPhase('stopping');
    this.stopAt = performance.now();
    this.dispatcher?.close();
    this.emit('stopping');
    this.log.info('stopping: draining workers', {
      signal,
      timeout_ms: this.settings.SERVICE_GRACEFUL_TIMEOUT,
    });
    this.clearTimers();
    for (const s of this.slots.values()) {
      if (s.state === 'starting' || s.state === 'standby') this.kill(s, 'killed', 'SIGKILL');
      else this.retire(s, 'stop');
    }
    // The workers end their own drain at SERVICE_GRACEFUL_TIMEOUT (cleanup included): the kill
    // is for a worker that does not, never for one finishing in time.
    this.stopTimer = this.later(
      this.settings.SERVICE_GRACEFUL_TIMEOUT + KILL_GRACE_MS,
      'the stop deadline',
      () => {
        this.log.error('graceful timeout reached: killing the workers still running', {
          workers: [...this.slots.keys()],
        });
        this.exitCode = this.exitCode || 1;
        for (const s of this.slots.values()) s.worker.process.kill('SIGKILL');
      },
    );
    this.finishIfEmpty();
  }

  /** Ends everything with a given exit code (boot failure: 3, crash budget: 4). */
  private halt(code: number, message: string, graceful: boolean): void {
    if (this.phase === 'stopping') return;
    this.log.error(message);
    this.exitCode = code;
    if (graceful) {
      this.stop(false);
      return;
    }
    // Only at start-up: nothing serves yet.
    this.setPhase('stopping');
    this.stopAt = performance.now();
    this.dispatcher?.close();
    this.emit('stopping');
    this.clearTimers();
    for (const s of this.slots.values()) this.kill(s, 'killed', 'SIGKILL');
    this.finishIfEmpty();
  }

  private clearTimers(): void {
    for (const t of this.pendingReplacements) clearTimeout(t);
    this.pendingReplacements.clear();
    if (this.hungTimer) clearInterval(this.hungTimer);
    clearTimeout(this.spareTimer);
  }

  private finishIfEmpty(): void {
    if (this.phase !== 'stopping' || this.slots.size > 0) return;
    if (this.stopTimer) clearTimeout(this.stopTimer);
    this.log.info('stopped', { exit_code: this.exitCode });
    this.opts.exit(this.exitCode);
  }

  // ---- seats: how many workers serve or are on their way to serve --------------------------

  private holdsSeat(s: Slot): boolean {
    return this.slots.has(s.id) && !s.retired;
  }

  private servingCount(): number {
    let n = 0;
    for (const s of this.slots.values()) {
      if (s.state !== 'draining' && !s.retired && s.purpose !== 'spare') n++;
    }
    return n;
  }

  /**
   * Seats taken: workers serving or booting to serve, and replacements waiting for their
   * backoff. A worker booting to replace a live one (reload, recycle) shares its seat; a scale-up
   * worker takes one only when ready; spares and retired workers take none.
   */
  private seatsTaken(): number {
    let n = this.pendingReplacements.size;
    for (const s of this.slots.values()) {
      if (s.purpose === 'spare' || s.retired || s.extra) continue;
      if (s.predecessor && this.holdsSeat(s.predecessor)) continue;
      n++;
    }
    return n;
  }

  /** Fills every empty seat: at once, or after `delayMs` (a backoff). */
  private fillSeats(delayMs: number): void {
    if (this.phase === 'stopping') return;
    for (let missing = this.desired - this.seatsTaken(); missing > 0; missing--) {
      if (delayMs > 0) this.replaceLater(delayMs);
      else if (!this.spawn('replace'))
        this.replaceLater(retryDelay(this.forkFailures, this.policy(), this.random));
    }
  }

  private replaceLater(delayMs: number): void {
    const t = this.later(delayMs, 'a scheduled replacement', () => {
      this.pendingReplacements.delete(t);
      if (this.phase === 'stopping' || this.desired - this.seatsTaken() <= 0) return;
      if (!this.spawn('replace'))
        this.replaceLater(retryDelay(this.forkFailures, this.policy(), this.random));
    });
    this.pendingReplacements.add(t);
  }

  /** A seat was lost to a worker that failed: count it, then refill (or halt on the budget). */
  private seatLost(uptimeMs: number, what: string, meta: Record<string, unknown>): void {
    const d = this.crashes.record(Date.now(), uptimeMs);
    this.emit('restart', 'crash');
    if (d.budgetExceeded) {
      this.log.error(what, meta);
      this.halt(
        4,
        `crash budget exceeded: ${d.recent} unstable restarts within ${this.settings.SERVICE_CRASH_WINDOW} ms (budget ${this.settings.SERVICE_CRASH_BUDGET}); stopping (exit 4)`,
        true,
      );
      return;
    }
    if (this.desired - this.seatsTaken() <= 0) {
      this.log.error(`${what}; the worker booting to replace it takes its place`, meta);
      return;
    }
    this.log.error(`${what}; replacing it${d.delayMs ? ` in ${d.delayMs} ms` : ''}`, {
      ...meta,
      streak: d.streak,
    });
    this.fillSeats(d.delayMs);
  }

  // ---- workers ------------------------------------------------------------------------------

  /** Keeps SERVICE_SPARE_WORKERS warm spares (forked, initialised, not listening). */
  private ensureSpares(): void {
    if (this.phase !== 'running' || this.reloading || this.spareFailures > 3) return;
    let have = 0;
    for (const s of this.slots.values()) if (s.purpose === 'spare' && !s.retired) have++;
    for (; have < this.settings.SERVICE_SPARE_WORKERS; have++) {
      if (this.spawn('spare')) continue;
      this.spareFailed('fork failed');
      return;
    }
  }

  /** A spare that could not be had: try again later, doubling, at most 3 times a generation. */
  private spareFailed(why: string, meta: Record<string, unknown> = {}): void {
    this.spareFailures++;
    if (this.spareFailures > 3) {
      this.log.error(`spare worker ${why}; no more spares until the next reload`, meta);
      return;
    }
    const delay = 500 * 2 ** this.spareFailures;
    this.log.warn(`spare worker ${why}; trying again in ${delay} ms`, meta);
    clearTimeout(this.spareTimer);
    this.spareTimer = this.later(delay, 'the spare refill', () => this.ensureSpares());
  }

  private takeSpare(): Slot | undefined {
    for (const s of this.slots.values()) {
      if (
        s.purpose === 'spare' &&
        s.state === 'standby' &&
        !s.retired &&
        s.generation === this.current.generation
      )
        return s;
    }
    return undefined;
  }

  /**
   * A worker for `purpose`: a warm spare when one is on standby, else a fresh fork with `gen`
   * (default: the committed configuration). Undefined when the fork failed.
   */
  private spawn(
    purpose: Purpose,
    opts: { predecessor?: Slot; extra?: boolean; gen?: Generation; seat?: number } = {},
  ): Slot | undefined {
    const spare = SPARE_SERVES.has(purpose) && !opts.gen ? this.takeSpare() : undefined;
    let slot: Slot | undefined;
    if (spare) {
      slot = spare;
      spare.purpose = purpose;
      spare.state = 'starting';
      spare.generation = this.current.generation;
      spare.forkedAt = Date.now();
      spare.readyTimer = this.readyDeadline(spare);
      this.send(spare, { t: 'activate' });
      this.log.debug('spare worker activated', {
        worker: spare.id,
        worker_pid: spare.pid,
        purpose,
      });
    } else {
      slot = this.fork(purpose, opts.gen ?? this.current);
      if (slot)
        this.log.debug('worker forked', {
          worker: slot.id,
          worker_pid: slot.pid,
          purpose,
          replaces: opts.predecessor?.id,
        });
    }
    if (slot) {
      slot.predecessor = opts.predecessor;
      slot.extra = opts.extra;
      if (purpose !== 'spare') this.seatFor(slot, opts.predecessor?.seat ?? opts.seat);
    }
    if (spare) this.ensureSpares();
    return slot;
  }

  /** Gives a worker its seat: the one named, a vacant one, or a new one. */
  private seatFor(slot: Slot, seat?: number): void {
    if (seat === undefined) {
      seat = this.vacant.shift();
      if (seat === undefined) {
        const used = new Set(this.vacant);
        for (const s of this.slots.values())
          if (s !== slot && s.seat && !s.retired) used.add(s.seat);
        for (seat = 1; used.has(seat); seat++);
      }
    }
    slot.seat = seat;
    const record = this.seats.get(seat);
    if (record) record.restarts++;
    else this.seats.set(seat, { restarts: 0 });
  }

  /** A seat nobody holds any more (its worker died or hung, no successor): for the next replacement. */
  private vacate(seat: number): void {
    if (!seat || this.vacant.includes(seat)) return;
    for (const s of this.slots.values()) if (s.seat === seat && !s.retired) return;
    this.vacant.push(seat);
  }

  private readyDeadline(slot: Slot): NodeJS.Timeout {
    return this.later(this.settings.SERVICE_READY_TIMEOUT, 'a ready deadline', () => {
      if (slot.state !== 'starting' || slot.retired) return;
      slot.bootError ??= `not ready within SERVICE_READY_TIMEOUT (${this.settings.SERVICE_READY_TIMEOUT} ms)`;
      this.log.error('worker not ready in time, killing it', {
        worker: slot.id,
        worker_pid: slot.pid,
      });
      this.kill(slot, 'killed', 'SIGKILL');
    });
  }

  /** Forks a worker; undefined (logged, nothing changed) when the system refuses the fork. */
  private fork(purpose: Purpose, gen: Generation): Slot | undefined {
    const maxReq = gen.settings.SERVICE_MAX_REQUESTS;
    // Jitter (0-10%) so that workers started together do not recycle together.
    const maxRequests =
      maxReq > 0 ? maxReq + Math.floor(this.random() * Math.max(1, maxReq * 0.1)) : 0;
    let worker: Worker;
    let handoff: ReturnType<Transport<unknown>['prepareFork']> | undefined;
    try {
      // leastconn's native handoff: a channel of the worker's own (EMFILE fails the fork here).
      handoff = this.dispatcher?.transport.prepareFork();
      if (handoff?.stdio) cluster.setupPrimary({ stdio: handoff.stdio });
      worker = cluster.fork({
        ...gen.env,
        ...handoff?.env,
        AGENT_WORKER_MAX_REQUESTS: String(maxRequests),
        AGENT_WORKER_SPARE: purpose === 'spare' ? '1' : '0',
      });
    } catch (err) {
      handoff?.forked(undefined);
      this.forkFailed(purpose, err);
      return undefined;
    }
    handoff?.forked(worker.process.pid === undefined ? undefined : worker);
    // EMFILE, EAGAIN, ENOMEM...: no process, and an 'error' event on the next tick that would
    // crash the primary unheard. The worker is never 'exit'ed either: drop it from the cluster.
    worker.on(
      'error',
      this.guard('a worker error', (err: unknown) => {
        if (worker.process.pid === undefined) return;
        this.log.warn('worker process error', { worker: worker.id, err });
      }),
    );
    if (worker.process.pid === undefined) {
      worker.once('error', (err: unknown) => this.forkFailed(purpose, err));
      if (cluster.workers) delete cluster.workers[worker.id];
      return undefined;
    }
    this.forkFailures = 0;
    const now = Date.now();
    const slot: Slot = {
      worker,
      id: worker.id,
      pid: worker.process.pid,
      purpose,
      state: 'starting',
      generation: gen.generation,
      forkedAt: now,
      readyAt: 0,
      lastBeat: performance.now(),
      requests: 0,
      rss: 0,
      maxRequests,
      recycleFailures: 0,
      recycleNotBefore: 0,
      waiters: [],
      exitWaiters: [],
      seat: 0,
      inflight: 0,
      streams: 0,
    };
    this.slots.set(slot.id, slot);
    slot.readyTimer = this.readyDeadline(slot);
    return slot;
  }

  private forkFailed(purpose: Purpose, err: unknown): void {
    this.forkFailures++;
    const e = err as NodeJS.ErrnoException | undefined;
    this.log.error(`cannot fork a worker (${purpose}): ${errorText(err)}`, {
      code: e?.code,
      failures_in_a_row: this.forkFailures,
    });
  }

  private waitReady(slot: Slot): Promise<'ready' | 'failed'> {
    if (slot.state === 'ready') return Promise.resolve('ready');
    if (!this.slots.has(slot.id) || slot.retired) return Promise.resolve('failed');
    return new Promise((resolve) => slot.waiters.push(resolve));
  }

  private settle(slot: Slot, r: 'ready' | 'failed'): void {
    const waiters = slot.waiters.splice(0);
    for (const w of waiters) w(r);
  }

  private send(slot: Slot, msg: PrimaryToWorker): void {
    try {
      if (slot.worker.isConnected()) slot.worker.send(msg, undefined, undefined, () => undefined);
    } catch {
      // The worker is going away; its exit is handled by onExit.
    }
  }

  /** Ask a worker to drain and exit; its exit is then expected. */
  private retire(slot: Slot, reason: DrainReason): void {
    if (slot.retired) return;
    slot.retired = reason;
    slot.state = 'draining';
    clearTimeout(slot.readyTimer);
    this.send(slot, { t: 'drain', reason, timeoutMs: this.settings.SERVICE_GRACEFUL_TIMEOUT });
    if (reason !== 'stop') {
      // A drain for reload/scale/recycle also has a deadline (the stop has its own timer).
      slot.killTimer = this.later(
        this.settings.SERVICE_GRACEFUL_TIMEOUT + KILL_GRACE_MS,
        'a drain deadline',
        () => slot.worker.process.kill('SIGKILL'),
      );
    }
    this.emit('workers', this.readyCount());
  }

  private kill(slot: Slot, why: 'killed', signal: NodeJS.Signals): void {
    slot.retired ??= why;
    clearTimeout(slot.readyTimer);
    slot.worker.process.kill(signal);
    if (signal !== 'SIGKILL') {
      slot.killTimer = this.later(KILL_GRACE_MS, 'a kill deadline', () =>
        slot.worker.process.kill('SIGKILL'),
      );
    }
  }

  private onMessage(worker: Worker, msg: unknown): void {
    const slot = this.slots.get(worker.id);
    if (!slot || !isWorkerMessage(msg)) return;
    switch (msg.t) {
      case 'standby':
        // A worker the pool already ended (a message in flight) changes nothing.
        if (slot.state !== 'starting' || slot.purpose !== 'spare' || slot.retired) return;
        clearTimeout(slot.readyTimer);
        slot.state = 'standby';
        this.log.debug('spare worker on standby', {
          worker: slot.id,
          worker_pid: slot.pid,
          ms: Date.now() - slot.forkedAt,
        });
        return;
      case 'ready':
        if (slot.state !== 'starting' || slot.retired) return;
        this.onReady(slot);
        return;
      case 'backlog':
        this.send(slot, {
          t: 'backlog-result',
          id: msg.id,
          inflight: this.inFlight(),
          workers: this.readyCount(),
        });
        return;
      case 'boot-error':
        slot.bootError = msg.code ? `${msg.message} (${msg.code})` : msg.message;
        return;
      case 'heartbeat':
        slot.lastBeat = performance.now();
        slot.requests = msg.requests;
        slot.rss = msg.rss;
        slot.inflight = msg.inflight;
        slot.streams = msg.streams;
        this.checkRecycle(slot);
        return;
    }
  }

  private onReady(slot: Slot): void {
    clearTimeout(slot.readyTimer);
    slot.state = 'ready';
    slot.readyAt = Date.now();
    slot.lastBeat = performance.now();
    if (slot.extra) {
      slot.extra = false;
      this.desired++;
    }
    this.log.info('worker ready', {
      worker: slot.id,
      worker_pid: slot.pid,
      ms: slot.readyAt - slot.forkedAt,
    });
    this.settle(slot, 'ready');
    this.emit('workers', this.readyCount());
    if (this.phase === 'booting' && this.readyCount() >= this.desired) {
      this.setPhase('running');
      this.log.info(
        `ready: ${this.readyCount()}/${this.desired} workers on ${this.settings.SERVICE_HOST}:${this.settings.SERVICE_PORT}`,
      );
      this.emit('ready', this.readyCount());
      this.ensureSpares();
    }
  }

  private checkRecycle(slot: Slot): void {
    if (slot.state !== 'ready' || slot.retired || slot.recycling || this.phase !== 'running')
      return;
    if (performance.now() < slot.recycleNotBefore) return;
    const maxMb = this.settings.SERVICE_MAX_MEMORY_MB;
    let reason: 'memory' | 'requests' | undefined;
    if (slot.maxRequests > 0 && slot.requests >= slot.maxRequests) reason = 'requests';
    else if (maxMb > 0 && slot.rss > maxMb * 1048576) reason = 'memory';
    if (!reason) return;
    slot.recycling = true;
    this.enqueue({ kind: 'recycle', id: slot.id, reason });
  }

  private checkHeartbeats(): void {
    if (this.phase === 'stopping') return;
    const now = performance.now();
    const gap = now - this.lastHeartbeatCheck;
    this.lastHeartbeatCheck = now;
    if (checkWasLate(gap, HEARTBEAT_CHECK_MS)) {
      // The primary did not run either (the group paused, a VM suspended): nobody's silence in
      // that time means anything. Every worker gets a full timeout from now.
      this.log.warn(
        `the supervisor did not run for ${Math.round(gap)} ms (paused or suspended?); heartbeat deadlines restarted`,
      );
      for (const s of this.slots.values()) s.lastBeat = now;
      return;
    }
    const timeout = this.settings.SERVICE_WORKER_TIMEOUT;
    for (const slot of this.slots.values()) {
      if (slot.state !== 'ready' || slot.retired || now - slot.lastBeat <= timeout) continue;
      this.log.error('worker hung: no heartbeat, killing and replacing it', {
        worker: slot.id,
        worker_pid: slot.pid,
        silent_ms: Math.round(now - slot.lastBeat),
      });
      slot.state = 'draining';
      // Not SIGTERM: a worker that only seemed hung (stopped, then resumed) would take it for the
      // service's stop and answer /health 503 on its connections. A drain message is read after
      // whatever blocked it, as a replacement (200 on /health); SIGKILL follows after the grace.
      slot.retired = 'hung';
      this.send(slot, { t: 'drain', reason: 'hung', timeoutMs: KILL_GRACE_MS });
      slot.killTimer = this.later(KILL_GRACE_MS, 'a kill deadline', () =>
        slot.worker.process.kill('SIGKILL'),
      );
      this.emit('restart', 'hung');
      this.emit('workers', this.readyCount());
      this.vacate(slot.seat);
      this.fillSeats(0);
    }
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    const slot = this.slots.get(worker.id);
    if (!slot) return;
    this.slots.delete(slot.id);
    clearTimeout(slot.readyTimer);
    clearTimeout(slot.killTimer);
    const desc = describeExit(code, signal, slot.retired !== undefined);
    const meta = { worker: slot.id, worker_pid: slot.pid, code, signal };
    const wasReady = slot.readyAt > 0;
    this.settle(slot, 'failed');
    for (const w of slot.exitWaiters.splice(0)) w();
    // A successor needs its predecessor only while both live: no chain of every worker ever.
    for (const s of this.slots.values()) if (s.predecessor === slot) s.predecessor = undefined;
    this.emit('workers', this.readyCount());
    const seat = slot.seat ? this.seats.get(slot.seat) : undefined;
    if (seat && this.phase !== 'stopping') {
      seat.lastExit = {
        code,
        signal,
        reason: slot.retired ?? (wasReady ? 'crash' : 'boot failure'),
        at: new Date().toISOString(),
      };
    }

    if (this.phase === 'stopping') {
      const clean = slot.retired === 'stop' && code === 0;
      if (slot.retired === 'stop' && !clean) this.exitCode = this.exitCode || 1;
      this.log.info(`worker ${slot.id} ${desc}${clean ? ' (drained)' : ''}`, meta);
      this.finishIfEmpty();
      return;
    }
    if (slot.purpose === 'spare') {
      if (slot.retired) this.log.debug(`spare worker ${slot.id} ${desc}`, meta);
      else
        this.spareFailed(
          slot.state === 'standby' ? desc : `failed to boot: ${slot.bootError ?? desc}`,
          meta,
        );
      return;
    }
    if (slot.retired && slot.retired !== 'killed') {
      const level = slot.retired === 'hung' ? 'warn' : 'info';
      this.log.log(level, `worker ${slot.id} ${desc} (${slot.retired})`, meta);
      this.fillSeats(0);
      return;
    }
    if (!wasReady) {
      const why = slot.bootError ?? desc;
      if (this.phase === 'booting') {
        this.halt(3, `worker ${slot.id} failed to boot: ${why}; stopping (exit 3)`, false);
        return;
      }
      // While running, a worker that cannot boot is a crash of its seat, if it had one: a reload,
      // scale-up or recycle worker whose predecessor still serves costs nothing but the attempt.
      if (this.desired - this.seatsTaken() > 0) {
        this.vacate(slot.seat);
        this.seatLost(0, `worker ${slot.id} (${slot.purpose}) failed to boot: ${why}`, meta);
      } else {
        this.log.error(`worker ${slot.id} (${slot.purpose}) failed to boot: ${why}`, meta);
      }
      return;
    }
    // A ready worker died without being asked to: a crash. A successor booting for it (reload,
    // recycle) takes its seat.
    this.vacate(slot.seat);
    this.seatLost(Date.now() - slot.readyAt, `worker ${slot.id} ${desc}`, meta);
  }
}
